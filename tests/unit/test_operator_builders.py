"""Manifest builders: what a ModelDeployment becomes (table-driven, no cluster)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flotilla import labels
from flotilla.crds import DEFAULT_IMAGE, SIMULATOR_PRESETS, ModelDeploymentSpec
from flotilla_operator import builders
from flotilla_operator.drift import contains
from flotilla_operator.errors import InvalidSpec
from flotilla_operator.merging import merge


def spec(**fields: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate({"model": "org/model", **fields})


ARGS = [
    pytest.param({}, ["--model", "org/model", "--served-model-name", "org/model", "--port", "8000",
                      "--block-size", "16"], id="defaults"),
    pytest.param({"servedModelName": "m", "engine": {"port": 9000, "blockSize": 32, "maxModelLen": 4096}},
                 ["--model", "org/model", "--served-model-name", "m", "--port", "9000", "--block-size", "32",
                  "--max-model-len", "4096"], id="engine-settings"),
    pytest.param({"resources": {"gpus": 4}, "engine": {"tensorParallelSize": 4}},
                 [..., "--tensor-parallel-size", "4"], id="tensor-parallel"),
    pytest.param({"lora": {"enabled": True, "maxLoras": 3, "maxLoraRank": 64, "maxCpuLoras": 8}},
                 [..., "--enable-lora", "--max-loras", "3", "--max-lora-rank", "64", "--max-cpu-loras", "8"],
                 id="lora"),
    pytest.param({"engine": {"args": ["--enforce-eager"]}}, [..., "--enforce-eager"], id="extra-args-last"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "expected"), ARGS)
def test_engine_args(fields: dict[str, Any], expected: list[Any]) -> None:
    args = builders.engine_args(spec(**fields))
    if expected[0] is ...:
        assert args[-(len(expected) - 1) :] == expected[1:]
    else:
        assert args == expected


def test_kv_events_config_is_vllm_json() -> None:
    args = builders.engine_args(spec(kvEvents={"enabled": True, "port": 6000, "topic": "t"}))
    config = json.loads(args[args.index("--kv-events-config") + 1])
    assert config == {
        "enable_kv_cache_events": True,
        "publisher": "zmq",
        "endpoint": "tcp://*:6000",
        "topic": "t",
    }


LABELS = [
    pytest.param({}, {labels.MODEL: "org.model", labels.KV_EVENTS: "false", labels.LORA_ENABLED: "false"},
                 {labels.ENGINE_PORT: "8000", labels.SERVED_MODEL_NAME: "org/model"},
                 id="defaults"),
    pytest.param({"servedModelName": "chat", "kvEvents": {"enabled": True}, "lora": {"enabled": True},
                  "routingProfile": "prefix"},
                 {labels.MODEL: "chat", labels.KV_EVENTS: "true", labels.LORA_ENABLED: "true"},
                 {labels.KV_EVENTS_PORT: "5557", labels.ROUTING_PROFILE: "prefix"}, id="features-on"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "want_labels", "want_annotations"), LABELS)
def test_pod_labels_and_annotations_follow_the_contract(
    fields: dict[str, Any], want_labels: dict[str, str], want_annotations: dict[str, str]
) -> None:
    template = builders.pod_template("md", spec(**fields))
    assert contains(template["metadata"]["labels"], want_labels)
    assert contains(template["metadata"]["annotations"], want_annotations)
    assert template["metadata"]["labels"][labels.DEPLOYMENT] == "md"
    assert template["metadata"]["labels"][labels.COMPONENT] == labels.COMPONENT_ENGINE


RESOURCES = [
    pytest.param({}, {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}, id="one-gpu"),
    pytest.param({"gpus": 0}, None, id="cpu-only"),
    pytest.param({"gpus": 2, "cpu": 8, "memory": "64Gi"},
                 {"requests": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "2"},
                  "limits": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "2"}}, id="full"),
]  # fmt: skip


@pytest.mark.parametrize(("resources", "expected"), RESOURCES)
def test_resources(resources: dict[str, Any], expected: dict[str, Any] | None) -> None:
    container = builders.engine_container(spec(resources=resources))
    assert container.get("resources") == expected


def test_probes_hit_health_on_the_named_port() -> None:
    container = builders.engine_container(spec(engine={"probes": {"startupTimeoutSeconds": 600}}))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["startupProbe"]["failureThreshold"] == 60


def test_deployment_is_owned_selected_and_placed() -> None:
    md = spec(
        replicas=3,
        resources={"nodeSelector": {"gpu": "a100"}, "tolerations": [{"key": "gpu", "operator": "Exists"}]},
    )
    dep = builders.deployment("md", "ns", "uid-1", md)
    assert dep["metadata"]["ownerReferences"] == [builders.owner_reference("md", "uid-1")]
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["selector"]["matchLabels"] == builders.selector_labels("md")
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    svc = builders.service("md", "ns", "uid-1", md)
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


def test_pod_template_overrides_merge_by_name() -> None:
    md = spec(podTemplate={
        "metadata": {"labels": {"team": "a"}, "annotations": {"x": "y"}},
        "spec": {"containers": [{"name": "engine", "env": [{"name": "HF_HOME", "value": "/cache"}]},
                                {"name": "sidecar", "image": "busybox"}],
                 "priorityClassName": "high"},
    })  # fmt: skip
    template = builders.pod_template("md", md)
    containers = template["spec"]["containers"]
    assert [c["name"] for c in containers] == ["engine", "sidecar"]
    assert containers[0]["image"] == DEFAULT_IMAGE  # kept
    assert containers[0]["env"] == [{"name": "HF_HOME", "value": "/cache"}]
    assert template["spec"]["priorityClassName"] == "high"
    assert template["metadata"]["labels"]["team"] == "a"


@pytest.mark.parametrize("label", [labels.MODEL, labels.DEPLOYMENT, labels.MANAGED_BY])
def test_reserved_labels_cannot_be_overridden(label: str) -> None:
    with pytest.raises(InvalidSpec, match=label):
        builders.pod_template("md", spec(podTemplate={"metadata": {"labels": {label: "x"}}}))


MERGES = [
    pytest.param({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}, {"a": {"b": 1, "c": 3}}, id="maps-recursive"),
    pytest.param({"l": [1, 2]}, {"l": [3]}, {"l": [3]}, id="plain-lists-replace"),
    pytest.param({"l": [{"name": "a", "v": 1}]}, {"l": [{"name": "a", "w": 2}, {"name": "b"}]},
                 {"l": [{"name": "a", "v": 1, "w": 2}, {"name": "b"}]}, id="named-lists-by-name"),
]  # fmt: skip


@pytest.mark.parametrize(("base", "override", "expected"), MERGES)
def test_merge(base: Any, override: Any, expected: Any) -> None:
    assert merge(base, override) == expected


CONTAINS = [
    pytest.param({"a": 1, "b": 2}, {"a": 1}, True, id="extra-live-fields"),
    pytest.param({"a": 1}, {"a": 2}, False, id="changed-value"),
    pytest.param({"a": [1, 2]}, {"a": [1]}, False, id="list-length"),
    pytest.param({"a": [{"x": 1, "y": 2}]}, {"a": [{"x": 1}]}, True, id="list-elements-subset"),
    pytest.param({}, {"a": 1}, False, id="missing"),
]


@pytest.mark.parametrize(("live", "desired", "expected"), CONTAINS)
def test_contains(live: Any, desired: Any, expected: bool) -> None:
    assert contains(live, desired) is expected


LORA_ENV = [
    pytest.param([], [{"name": builders.LORA_ENV, "value": "true"}], id="added"),
    pytest.param([{"name": builders.LORA_ENV, "value": "1"}], [{"name": builders.LORA_ENV, "value": "1"}],
                 id="user-value-kept-once"),
]  # fmt: skip


@pytest.mark.parametrize(("env", "expected"), LORA_ENV)
def test_lora_runtime_env(env: list[dict[str, str]], expected: list[dict[str, str]]) -> None:
    container = builders.engine_container(spec(lora={"enabled": True}, engine={"env": env}))
    assert container["env"] == expected


@pytest.mark.parametrize(
    ("fields", "ports", "extra_peers"),
    [
        pytest.param({}, [8000], 0, id="engine-port-only"),
        pytest.param({"kvEvents": {"enabled": True, "port": 5600}}, [8000, 5600], 0, id="kv-events-port-too"),
        pytest.param(
            {
                "networkPolicy": {
                    "extraIngressFrom": [{"namespaceSelector": {"matchLabels": {"team": "obs"}}}]
                }
            },
            [8000],
            1,
            id="extra-peer",
        ),
    ],
)
def test_engines_admit_only_the_gateway_and_the_operator(
    fields: dict[str, Any], ports: list[int], extra_peers: int
) -> None:
    md = spec(**fields)
    policy = builders.network_policy("md", "ns", "uid-1", md)
    assert policy["spec"]["podSelector"] == {"matchLabels": builders.selector_labels("md")}
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress untouched: engines download weights
    (rule,) = policy["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == ports
    first = rule["from"][0]["podSelector"]["matchExpressions"][0]
    assert (first["key"], first["operator"]) == (labels.COMPONENT, "In")
    assert set(first["values"]) == {labels.COMPONENT_GATEWAY, labels.COMPONENT_OPERATOR}
    assert len(rule["from"]) == 1 + extra_peers


def test_engine_pods_run_with_restricted_basics() -> None:
    pod = builders.deployment("md", "ns", "uid-1", spec())["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["automountServiceAccountToken"] is False
    ctx = pod["containers"][0]["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}


SIM = {"engine": {"type": "simulator"}, "resources": {"gpus": 0}}

IMAGES = [
    pytest.param({}, None, DEFAULT_IMAGE, id="vllm-default"),
    pytest.param({"engine": {"image": "my/vllm:1"}}, "flotilla:sim", "my/vllm:1", id="vllm-explicit"),
    pytest.param(SIM, "flotilla:sim", "flotilla:sim", id="simulator-from-operator"),
    pytest.param({**SIM, "engine": {"type": "simulator", "image": "mine:2"}}, "flotilla:sim", "mine:2",
                 id="simulator-explicit-wins"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "simulator_image", "expected"), IMAGES)
def test_engine_image(fields: dict[str, Any], simulator_image: str | None, expected: str) -> None:
    container = builders.engine_container(spec(**fields), simulator_image=simulator_image)
    assert container["image"] == expected


def test_simulator_without_an_image_is_an_invalid_spec() -> None:
    with pytest.raises(InvalidSpec, match="FLOTILLA_SIMULATOR_IMAGE"):
        builders.deployment("md", "ns", "uid-1", spec(**SIM), simulator_image=None)


def test_simulator_runs_flotilla_sim_serve_with_the_vllm_arguments() -> None:
    md = spec(**{**SIM, "engine": {"type": "simulator", "port": 9000, "args": ["--enforce-eager"],
                                   "simulator": {"preset": "zero", "startupDelaySeconds": 2.5,
                                                 "kvCacheBlocks": 512}},
                 "lora": {"enabled": True}, "kvEvents": {"enabled": True}})  # fmt: skip
    dep = builders.deployment("md", "ns", "uid-1", md, simulator_image="flotilla:sim")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["command"] == [
        "flotilla", "sim", "serve", "--sim-preset=zero", "--sim-startup-delay=2.5", "--sim-num-gpu-blocks=512",
    ]  # fmt: skip
    assert container["args"] == builders.engine_args(md)  # exactly what vLLM would get
    assert "resources" not in container  # no GPU
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
        "runAsNonRoot": True,
        "runAsUser": builders.SIMULATOR_UID,
    }


def test_vllm_engines_keep_the_image_entrypoint() -> None:
    container = builders.engine_container(spec())
    assert "command" not in container
    assert "runAsNonRoot" not in container["securityContext"]  # vLLM's image runs as root


def test_simulator_presets_match_the_simulators() -> None:
    from engine_sim.config import PRESETS

    assert sorted(SIMULATOR_PRESETS) == sorted(PRESETS)
