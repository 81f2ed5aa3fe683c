"""The chart's templates, rendered by the real ``helm template`` and asserted on: each option, the values schema,
and the restricted pod security of every pod the chart makes. No cluster (the helm binary comes with the e2e
tier's control plane build)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from flotilla import labels
from flotilla.crds import ModelDeploymentSpec
from flotilla_operator import builders
from tests.e2e.controlplane import REPO, binaries

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CHART = REPO / "charts" / "flotilla"
NS = "flotilla-system"
SM_API = "monitoring.coreos.com/v1/ServiceMonitor"


@pytest.fixture(scope="module")
def helm() -> Path:
    return binaries() / "helm"


def run(helm: Path, *args: str, values: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [
        str(helm),
        "template",
        "flotilla",
        str(CHART),
        "--namespace",
        NS,
        "--kube-version",
        "1.31.0",
        *args,
    ]
    stdin = None
    if values is not None:
        cmd += ["--values", "-"]
        stdin = yaml.safe_dump(values)
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60, check=False)


def render(helm: Path, *args: str, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    proc = run(helm, *args, values=values)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    for d in docs:
        meta = d["metadata"]
        if (
            d["kind"] == kind
            and meta["name"] == name
            and (namespace is None or meta.get("namespace") == namespace)
        ):
            return d
    raise AssertionError(
        f"no {kind} {namespace}/{name} in {[(d['kind'], d['metadata']['name']) for d in docs]}"
    )


def kinds(docs: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"]["name"]) for d in docs}


def container(docs: list[dict[str, Any]], deployment: str) -> dict[str, Any]:
    return dict(find(docs, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0])


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]


# ------------------------------------------------------------------ pod security

EVERY_POD = [
    pytest.param({}, id="defaults"),
    pytest.param({"redis": {"enabled": True}, "gateway": {"replicas": 1}}, id="redis"),
    pytest.param({"operator": {"namespaces": ["models"]}, "gateway": {"apiKeys": {"secretName": "keys"}}},
                 id="namespaced-with-keys"),
]  # fmt: skip


@pytest.mark.parametrize("values", EVERY_POD)
def test_every_pod_meets_the_restricted_pod_security_standard(helm: Path, values: dict[str, Any]) -> None:
    pods = dict(pod_specs(render(helm, values=values)))
    assert {"flotilla-operator", "flotilla-gateway"} <= set(pods)
    for name, pod in pods.items():
        ctx = pod["securityContext"]
        assert ctx["runAsNonRoot"] is True, name
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert isinstance(ctx["runAsUser"], int), name
        assert ctx["runAsUser"] > 0, name
        for c in pod["containers"] + pod.get("initContainers", []):
            sec = c["securityContext"]
            assert sec["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sec["capabilities"] == {"drop": ["ALL"]}, (name, c["name"])
            assert sec["seccompProfile"] == {"type": "RuntimeDefault"}, (name, c["name"])
        assert not pod.get("hostNetwork"), name
        assert not any(v.get("hostPath") for v in pod.get("volumes", [])), name


def test_simulated_engines_meet_it_too() -> None:
    md = ModelDeploymentSpec.model_validate(
        {"model": "m", "engine": {"type": "simulator"}, "resources": {"gpus": 0}}
    )
    pod = builders.pod_template("md", md, simulator_image="img")["spec"]
    ctx = pod["containers"][0]["securityContext"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert (ctx["runAsNonRoot"], ctx["allowPrivilegeEscalation"], ctx["capabilities"]) == (
        True, False, {"drop": ["ALL"]},
    )  # fmt: skip


# ------------------------------------------------------------------ values schema

BAD_VALUES = [
    pytest.param({"redis": {"enabled": "maybe"}}, "/redis/enabled", id="redis-enabled"),
    pytest.param({"gateway": {"replicas": -1}}, "/gateway/replicas", id="negative-replicas"),
    pytest.param({"operator": {"namespace": "x"}}, "'namespace' not allowed", id="typo-in-key"),
    pytest.param({"gateway": {"service": {"type": "Ingress"}}}, "/gateway/service/type", id="service-type"),
    pytest.param({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy", id="pull-policy"),
    pytest.param({"operator": {"namespaces": ["Not_A_Namespace"]}}, "/operator/namespaces/0", id="namespace-name"),
    pytest.param({"redis": {"externalUrl": "http://redis:6379"}}, "/redis/externalUrl", id="redis-url-scheme"),
    pytest.param({"gateway": {"tokenizer": {"subPath": "../etc"}}}, "/gateway/tokenizer/subPath", id="tokenizer-subpath"),
    pytest.param({"monitoring": {"serviceMonitor": {"interval": "often"}}}, "/monitoring/serviceMonitor/interval",
                 id="interval"),
]  # fmt: skip


@pytest.mark.parametrize(("values", "where"), BAD_VALUES)
def test_bad_values_fail_with_the_path_of_the_value(helm: Path, values: dict[str, Any], where: str) -> None:
    proc = run(helm, values=values)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert where in proc.stderr, proc.stderr


# ------------------------------------------------------------------ gateway, probes, keys


def test_gateway_is_ready_on_ready_and_alive_on_health(helm: Path) -> None:
    gw = container(render(helm), "flotilla-gateway")
    assert gw["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert gw["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    # every interface: port-forward dials localhost inside the pod, the Service and the probes the pod IP
    assert gw["args"][gw["args"].index("--host") + 1] == "0.0.0.0"


def test_api_keys_come_from_the_secret(helm: Path) -> None:
    docs = render(helm, values={"gateway": {"apiKeys": {"secretName": "gw-keys", "secretKey": "k.yaml"}}})
    pod = find(docs, "Deployment", "flotilla-gateway")["spec"]["template"]["spec"]
    (volume,) = pod["volumes"]
    assert volume["secret"] == {"secretName": "gw-keys", "items": [{"key": "k.yaml", "path": "keys.yaml"}]}
    gw = pod["containers"][0]
    assert "--api-keys-file=/etc/flotilla/keys/keys.yaml" in gw["args"]
    assert gw["volumeMounts"] == [{"name": "api-keys", "mountPath": "/etc/flotilla/keys", "readOnly": True}]


def test_the_engines_tokenizer_is_mounted_for_the_gateway(helm: Path) -> None:
    values = {
        "gateway": {
            "apiKeys": {"secretName": "k"},
            "tokenizer": {
                "volume": {"configMap": {"name": "llama3-tokenizer"}},
                "subPath": "llama3",
                "chatTemplate": "/t.jinja",
            },
        }
    }
    pod = find(render(helm, values=values), "Deployment", "flotilla-gateway")["spec"]["template"]["spec"]
    assert {"name": "tokenizer", "configMap": {"name": "llama3-tokenizer"}} in pod["volumes"]
    gw = pod["containers"][0]
    assert "--tokenizer=/etc/flotilla/tokenizer/llama3" in gw["args"]
    assert "--chat-template=/t.jinja" in gw["args"]
    assert {"name": "tokenizer", "mountPath": "/etc/flotilla/tokenizer", "readOnly": True} in gw[
        "volumeMounts"
    ]
    assert {"name": "api-keys", "mountPath": "/etc/flotilla/keys", "readOnly": True} in gw["volumeMounts"]
    # unset: the synthetic tokenizer, nothing mounted
    plain = container(render(helm), "flotilla-gateway")
    assert not any(a.startswith("--tokenizer") for a in plain["args"])
    assert "volumeMounts" not in plain


def test_notes_warn_loudly_without_api_keys() -> None:
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    # rendered by helm install (see test_chart.py); here: the warning is conditional on the keys only
    assert "{{- if not .Values.gateway.apiKeys.secretName }}" in notes
    assert "WARNING: the gateway has NO API KEYS" in notes


# ------------------------------------------------------------------ Redis

REDIS = [
    pytest.param({}, True, id="auto-with-two-gateways"),
    pytest.param({"gateway": {"replicas": 1}}, False, id="auto-with-one-gateway"),
    pytest.param({"gateway": {"replicas": 1}, "redis": {"enabled": True}}, True, id="forced-on"),
    pytest.param({"redis": {"enabled": False}}, False, id="forced-off"),
    pytest.param({"gateway": {"enabled": False}}, False, id="no-gateway-no-redis"),
]  # fmt: skip


@pytest.mark.parametrize(("values", "deployed"), REDIS)
def test_redis_is_deployed_when_gateways_must_share(
    helm: Path, values: dict[str, Any], deployed: bool
) -> None:
    docs = render(helm, values=values)
    present = {
        ("Deployment", "flotilla-redis"),
        ("Service", "flotilla-redis"),
        ("NetworkPolicy", "flotilla-redis"),
    }
    assert (present <= kinds(docs)) is deployed
    if deployed:  # networkPolicy.enabled=false drops the policy, not Redis
        off = kinds(render(helm, values={**values, "networkPolicy": {"enabled": False}}))
        assert ("Deployment", "flotilla-redis") in off
        assert ("NetworkPolicy", "flotilla-redis") not in off
    if values.get("gateway", {}).get("enabled", True):
        args = container(docs, "flotilla-gateway")["args"]
        url = f"--redis-url=redis://flotilla-redis.{NS}.svc:6379/0"
        assert (url in args) is deployed


def test_redis_wiring_image_and_policy(helm: Path) -> None:
    docs = render(helm, values={"redis": {"image": {"repository": "local/redis", "tag": "7"}, "port": 6380}})
    redis = container(docs, "flotilla-redis")
    assert redis["image"] == "local/redis:7"
    assert redis["ports"] == [{"name": "redis", "containerPort": 6380, "protocol": "TCP"}]
    args = redis["args"]
    assert args[args.index("--save") + 1] == ""
    assert args[args.index("--appendonly") + 1] == "no"
    svc = find(docs, "Service", "flotilla-redis")
    assert svc["spec"]["ports"][0]["port"] == 6380
    assert (
        f"--redis-url=redis://flotilla-redis.{NS}.svc:6380/0" in container(docs, "flotilla-gateway")["args"]
    )
    gateway_pod_labels = find(docs, "Deployment", "flotilla-gateway")["spec"]["template"]["metadata"][
        "labels"
    ]
    redis_pod_labels = find(docs, "Deployment", "flotilla-redis")["spec"]["template"]["metadata"]["labels"]
    policy = find(docs, "NetworkPolicy", "flotilla-redis")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["podSelector"]["matchLabels"].items() <= redis_pod_labels.items()
    (rule,) = policy["ingress"]
    (peer,) = rule["from"]  # only the gateway pods of this release
    assert set(peer) == {"podSelector"}
    assert peer["podSelector"]["matchLabels"].items() <= gateway_pod_labels.items()
    assert not peer["podSelector"]["matchLabels"].items() <= redis_pod_labels.items()
    assert rule["ports"] == [{"protocol": "TCP", "port": 6380}]


def test_external_redis_is_wired_and_none_deployed(helm: Path) -> None:
    docs = render(helm, values={"redis": {"externalUrl": "redis://cache.example:6379/2"}})
    assert ("Deployment", "flotilla-redis") not in kinds(docs)
    assert "--redis-url=redis://cache.example:6379/2" in container(docs, "flotilla-gateway")["args"]


# ------------------------------------------------------------------ simulator image


def test_operator_runs_simulators_from_the_charts_own_image(helm: Path) -> None:
    docs = render(helm, "--set", "image.repository=local/flotilla", "--set", "image.tag=dev")
    op = container(docs, "flotilla-operator")
    env = {e["name"]: e.get("value") for e in op["env"]}
    assert env["FLOTILLA_SIMULATOR_IMAGE"] == "local/flotilla:dev" == op["image"]
    assert container(docs, "flotilla-gateway")["image"] == "local/flotilla:dev"
    other = container(render(helm, "--set", "operator.simulatorImage=sim:1"), "flotilla-operator")
    assert {e["name"]: e.get("value") for e in other["env"]}["FLOTILLA_SIMULATOR_IMAGE"] == "sim:1"


# ------------------------------------------------------------------ namespaced mode


def rules(role: dict[str, Any]) -> set[tuple[str, str]]:
    return {(g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}


def test_cluster_wide_operator_uses_a_cluster_role(helm: Path) -> None:
    docs = render(helm)
    assert ("apps", "deployments") in rules(find(docs, "ClusterRole", "flotilla-operator"))
    assert not [
        d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].startswith("flotilla-operator")
    ]
    args = container(docs, "flotilla-operator")["args"]
    assert not [a for a in args if a.startswith(("--namespace", "--gateway-namespace"))]


def test_namespaced_operator_gets_roles_only_where_it_watches(helm: Path) -> None:
    docs = render(
        helm, values={"operator": {"namespaces": ["team-a", "team-b"]}, "gateway": {"namespace": "team-a"}}
    )
    cluster_rules = rules(find(docs, "ClusterRole", "flotilla-operator"))
    assert ("apps", "deployments") not in cluster_rules
    assert ("flotilla.dev", "modeldeployments") not in cluster_rules
    assert ("kopf.dev", "clusterkopfpeerings") in cluster_rules  # cluster-scoped needs stay
    assert ("apiextensions.k8s.io", "customresourcedefinitions") in cluster_rules
    for ns in ("team-a", "team-b"):
        role = find(docs, "Role", "flotilla-operator", ns)
        wanted = {("apps", "deployments"), ("flotilla.dev", "modeldeployments/status"), ("", "pods"),
                  ("flotilla.dev", "modelgroups/status"), ("", "configmaps")}  # fmt: skip
        assert wanted <= rules(role)
        binding = find(docs, "RoleBinding", "flotilla-operator", ns)
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "flotilla-operator", "namespace": NS}
        ]
    # the autoscaler still finds the gateway pods in the release namespace
    assert rules(find(docs, "Role", "flotilla-operator-gateways", NS)) == {("", "pods")}
    args = container(docs, "flotilla-operator")["args"]
    assert "--namespace=team-a" in args
    assert "--namespace=team-b" in args
    assert f"--gateway-namespace={NS}" in args
    assert "--namespace=team-a" in container(docs, "flotilla-gateway")["args"]
    assert find(docs, "Role", "flotilla-gateway", "team-a")


def test_one_watched_namespace_is_the_gateways_default(helm: Path) -> None:
    docs = render(helm, values={"operator": {"namespaces": ["models"]}})
    assert "--namespace=models" in container(docs, "flotilla-gateway")["args"]
    assert find(docs, "RoleBinding", "flotilla-gateway", "models")


def test_a_gateway_outside_the_watched_namespaces_is_refused(helm: Path) -> None:
    proc = run(helm, values={"operator": {"namespaces": ["team-a", "team-b"]}})
    assert proc.returncode != 0
    assert "gateway.namespace" in proc.stderr
    assert "would find no models" in proc.stderr


# ------------------------------------------------------------------ monitoring


def test_service_monitors_need_the_prometheus_operator(helm: Path) -> None:
    proc = run(helm, "--set", "monitoring.serviceMonitor.enabled=true")
    assert proc.returncode != 0
    assert "monitoring.coreos.com/v1" in proc.stderr


def test_service_monitors_select_the_gateway_and_the_operators_engine_services(helm: Path) -> None:
    docs = render(helm, "--api-versions", SM_API, values={
        "monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    })  # fmt: skip
    gateway_sm = find(docs, "ServiceMonitor", "flotilla-gateway")
    assert gateway_sm["metadata"]["labels"]["release"] == "prom"
    svc = find(docs, "Service", "flotilla-gateway")
    assert gateway_sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert gateway_sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"]
    engines_sm = find(docs, "ServiceMonitor", "flotilla-engines")
    md = ModelDeploymentSpec.model_validate({"model": "m"})
    engine_svc = builders.service("m", "ns", "uid", md)  # what the operator creates
    assert engines_sm["spec"]["selector"]["matchLabels"].items() <= engine_svc["metadata"]["labels"].items()
    assert engines_sm["spec"]["endpoints"][0]["port"] == engine_svc["spec"]["ports"][0]["name"]
    assert engines_sm["spec"]["namespaceSelector"] == {"any": True}
    namespaced = render(helm, "--api-versions", SM_API, values={
        "monitoring": {"serviceMonitor": {"enabled": True}}, "operator": {"namespaces": ["models"]},
    })  # fmt: skip
    assert find(namespaced, "ServiceMonitor", "flotilla-engines")["spec"]["namespaceSelector"] == {
        "matchNames": ["models"]
    }
    assert labels.COMPONENT in engines_sm["spec"]["selector"]["matchLabels"]


def test_dashboard_configmap_carries_the_sidecar_label_and_the_dashboard(helm: Path) -> None:
    assert ("ConfigMap", "flotilla-dashboard") not in kinds(render(helm))
    docs = render(helm, "--set", "monitoring.dashboard.enabled=true")
    cm = find(docs, "ConfigMap", "flotilla-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "dashboards" / "flotilla.json").read_text())
    assert json.loads(cm["data"]["flotilla.json"]) == shipped
