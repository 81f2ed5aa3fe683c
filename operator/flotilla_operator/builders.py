"""Pure manifest builders: a ModelDeployment in, the Deployment, Service and NetworkPolicy it implies out. No I/O.

Everything the operator creates is computed here, so the whole mapping is covered by table-driven unit tests
and the handlers stay thin. A simulated engine (``engine.type: simulator``) gets the very same vLLM arguments,
run by ``flotilla sim serve`` from the operator's simulator image: what a simulated cluster exercises is the
pod spec a GPU cluster would get, not a test fixture's version of it. The manifests are *apply configurations*: they list only the fields Flotilla
owns, and server-side apply merges them with what others (users, the deployment controller) own.
"""

from __future__ import annotations

import json
import math
from typing import Any

from flotilla import labels
from flotilla.crds import API_VERSION, DEFAULT_IMAGE, ModelDeploymentSpec
from flotilla_operator.errors import InvalidSpec
from flotilla_operator.merging import merge

ENGINE_CONTAINER = "engine"
HTTP_PORT_NAME = "http"
KV_EVENTS_PORT_NAME = "kv-events"
LORA_ENV = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"
#: the simulator's vLLM-compatible entry point (in Flotilla's image); its knobs follow as ``--sim-*`` flags
SIMULATOR_COMMAND = ("flotilla", "sim", "serve")
#: the uid Flotilla's image runs as (the Dockerfile's USER): stated so runAsNonRoot is checkable by the kubelet
SIMULATOR_UID = 65532
#: labels users may not set through podTemplate: the gateway, autoscaler and LoRA manager select by them
RESERVED_PREFIXES = (f"{labels.GROUP}/", labels.MANAGED_BY)


def selector_labels(name: str) -> dict[str, str]:
    """The Deployment's selector: immutable after creation, so only identity, nothing that can change."""
    return {labels.DEPLOYMENT: name, labels.COMPONENT: labels.COMPONENT_ENGINE}


def selector_string(name: str) -> str:
    return ",".join(f"{k}={v}" for k, v in selector_labels(name).items())


def owner_reference(name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelDeployment",
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_labels(name: str) -> dict[str, str]:
    return {**selector_labels(name), labels.MANAGED_BY: labels.MANAGED_BY_VALUE}


def engine_args(spec: ModelDeploymentSpec) -> list[str]:
    """vLLM ``serve`` arguments derived from the spec, then the user's extra ``engine.args``."""
    engine = spec.engine
    args = [
        "--model", spec.model,
        "--served-model-name", spec.served_name,
        "--port", str(engine.port),
        "--block-size", str(engine.block_size),
    ]  # fmt: skip
    if engine.max_model_len is not None:
        args += ["--max-model-len", str(engine.max_model_len)]
    if engine.tensor_parallel_size > 1:
        args += ["--tensor-parallel-size", str(engine.tensor_parallel_size)]
    if spec.lora.enabled:
        args += ["--enable-lora", "--max-loras", str(spec.lora.max_loras)]
        args += ["--max-lora-rank", str(spec.lora.max_lora_rank)]
        if spec.lora.max_cpu_loras is not None:
            args += ["--max-cpu-loras", str(spec.lora.max_cpu_loras)]
    if spec.kv_events.enabled:
        config = {
            "enable_kv_cache_events": True,
            "publisher": "zmq",
            "endpoint": f"tcp://*:{spec.kv_events.port}",
            "topic": spec.kv_events.topic,
        }
        args += ["--kv-events-config", json.dumps(config, separators=(",", ":"))]
    return args + list(engine.args)


def engine_image(spec: ModelDeploymentSpec, simulator_image: str | None) -> str:
    """``engine.image`` when set; otherwise vLLM's image, or the operator's simulator image for a simulator."""
    if spec.engine.image:
        return spec.engine.image
    if spec.engine.type == "vllm":
        return DEFAULT_IMAGE
    if not simulator_image:
        raise InvalidSpec(
            "engine.type is simulator but this operator has no simulator image (flag --simulator-image, env "
            "FLOTILLA_SIMULATOR_IMAGE; the Helm chart sets it): set engine.image"
        )
    return simulator_image


def simulator_command(spec: ModelDeploymentSpec) -> list[str]:
    """``flotilla sim serve`` and the simulator's own knobs; the vLLM arguments stay in ``args``."""
    sim = spec.engine.simulator
    command = [*SIMULATOR_COMMAND, f"--sim-preset={sim.preset}"]
    if sim.startup_delay_seconds:
        command.append(f"--sim-startup-delay={sim.startup_delay_seconds:g}")
    if sim.kv_cache_blocks is not None:
        command.append(f"--sim-num-gpu-blocks={sim.kv_cache_blocks}")
    return command


def _security_context(spec: ModelDeploymentSpec) -> dict[str, Any]:
    """Restricted-profile basics that every engine image tolerates; the GPU comes through the device plugin.

    vLLM's own image runs as root, so for vLLM runAsNonRoot is left to podTemplate. Flotilla's image runs as
    an unprivileged uid, so a simulated engine meets the whole restricted Pod Security Standard.
    """
    context: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if spec.engine.type == "simulator":
        context |= {"runAsNonRoot": True, "runAsUser": SIMULATOR_UID}
    return context


def pod_labels(name: str, spec: ModelDeploymentSpec) -> dict[str, str]:
    out = {
        **object_labels(name),
        labels.MODEL: labels.label_value(spec.served_name),
        labels.KV_EVENTS: str(spec.kv_events.enabled).lower(),
        labels.LORA_ENABLED: str(spec.lora.enabled).lower(),
    }
    if spec.gpu_type:
        out[labels.GPU_TYPE] = spec.gpu_type
    return out


def pod_annotations(spec: ModelDeploymentSpec) -> dict[str, str]:
    out = {
        labels.ENGINE_PORT: str(spec.engine.port),
        labels.SERVED_MODEL_NAME: spec.served_name,
        # vLLM serves Prometheus metrics on the API port
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(spec.engine.port),
        "prometheus.io/path": "/metrics",
    }
    if spec.routing_profile:  # read by the gateway's pod discovery
        out[labels.ROUTING_PROFILE] = spec.routing_profile
    if spec.kv_events.enabled:
        out[labels.KV_EVENTS_PORT] = str(spec.kv_events.port)
    return out


def _resources(spec: ModelDeploymentSpec) -> dict[str, Any]:
    res = spec.resources
    amounts: dict[str, str] = {}
    if res.cpu is not None:
        amounts["cpu"] = str(res.cpu)
    if res.memory is not None:
        amounts["memory"] = str(res.memory)
    if res.gpus:
        amounts["nvidia.com/gpu"] = str(res.gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}


def _probe(spec: ModelDeploymentSpec, *, failure_threshold: int, period: int) -> dict[str, Any]:
    probes = spec.engine.probes
    return {
        "httpGet": {"path": probes.path, "port": HTTP_PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": probes.timeout_seconds,
        "failureThreshold": failure_threshold,
    }


def engine_container(spec: ModelDeploymentSpec, *, simulator_image: str | None = None) -> dict[str, Any]:
    engine, probes = spec.engine, spec.engine.probes
    ports = [{"name": HTTP_PORT_NAME, "containerPort": engine.port, "protocol": "TCP"}]
    if spec.kv_events.enabled:
        ports.append({"name": KV_EVENTS_PORT_NAME, "containerPort": spec.kv_events.port, "protocol": "TCP"})
    env = list(engine.env)
    if spec.lora.enabled and not any(e.get("name") == LORA_ENV for e in env):
        # without it vLLM does not register /v1/load_lora_adapter (env names are a list-map key: no duplicates)
        env.append({"name": LORA_ENV, "value": "true"})
    container: dict[str, Any] = {
        "name": ENGINE_CONTAINER,
        "image": engine_image(spec, simulator_image),
        "imagePullPolicy": engine.image_pull_policy,
        "args": engine_args(spec),
        "ports": ports,
        # a startup probe lets a slow weight load take minutes without a lenient liveness probe afterwards
        "startupProbe": _probe(
            spec, period=10, failure_threshold=max(1, math.ceil(probes.startup_timeout_seconds / 10))
        ),
        "readinessProbe": _probe(
            spec, period=probes.period_seconds, failure_threshold=probes.failure_threshold
        ),
        "livenessProbe": _probe(
            spec, period=probes.period_seconds, failure_threshold=probes.failure_threshold
        ),
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
        "securityContext": _security_context(spec),
    }
    if engine.type == "simulator":
        container["command"] = simulator_command(spec)
    if env:
        container["env"] = env
    resources = _resources(spec)
    if resources:
        container["resources"] = resources
    return container


def _check_reserved(extra: dict[str, str]) -> None:
    bad = sorted(k for k in extra if k.startswith(RESERVED_PREFIXES))
    if bad:
        raise InvalidSpec(
            f"podTemplate.metadata.labels may not set Flotilla's reserved labels: {', '.join(bad)}"
        )


def pod_template(
    name: str, spec: ModelDeploymentSpec, *, simulator_image: str | None = None
) -> dict[str, Any]:
    override = spec.pod_template
    _check_reserved(override.metadata.labels)
    pod_spec: dict[str, Any] = {
        "containers": [engine_container(spec, simulator_image=simulator_image)],
        # vLLM's workers share tensors through /dev/shm; the container default (64 MiB) is too small
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}],
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        # engines need no Kubernetes API access: no token in the pod
        "automountServiceAccountToken": False,
    }
    if spec.resources.node_selector:
        pod_spec["nodeSelector"] = dict(spec.resources.node_selector)
    if spec.resources.tolerations:
        pod_spec["tolerations"] = list(spec.resources.tolerations)
    if override.spec:
        pod_spec = merge(pod_spec, override.spec)
        names = [c.get("name") for c in pod_spec.get("containers", [])]
        if ENGINE_CONTAINER not in names:  # pragma: no cover - merge by name cannot drop it
            raise InvalidSpec("podTemplate.spec removed the engine container")
    return {
        "metadata": {
            "labels": {**override.metadata.labels, **pod_labels(name, spec)},
            "annotations": {**override.metadata.annotations, **pod_annotations(spec)},
        },
        "spec": pod_spec,
    }


def deployment(
    name: str, namespace: str, uid: str, spec: ModelDeploymentSpec, *, simulator_image: str | None = None
) -> dict[str, Any]:
    """The engine Deployment (same name as the ModelDeployment); ``simulator_image`` serves engine.type
    simulator when engine.image is unset."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": object_labels(name),
            "ownerReferences": [owner_reference(name, uid)],
        },
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector_labels(name)},
            "template": pod_template(name, spec, simulator_image=simulator_image),
        },
    }


def service(name: str, namespace: str, uid: str, spec: ModelDeploymentSpec) -> dict[str, Any]:
    """A ClusterIP Service for in-cluster clients; Flotilla itself routes to pod IPs, not through it."""
    ports = [
        {"name": HTTP_PORT_NAME, "port": spec.engine.port, "targetPort": HTTP_PORT_NAME, "protocol": "TCP"}
    ]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": object_labels(name),
            "ownerReferences": [owner_reference(name, uid)],
        },
        "spec": {"type": "ClusterIP", "selector": selector_labels(name), "ports": ports},
    }


def network_policy(name: str, namespace: str, uid: str, spec: ModelDeploymentSpec) -> dict[str, Any]:
    """Ingress to the engine pods only from Flotilla's gateway and operator pods (and ``extraIngressFrom``).

    vLLM authenticates nobody, and with LoRA enabled its API loads code-adjacent artifacts on request, so
    "anyone in the cluster" is the wrong default. Egress is left alone (engines download weights).
    """
    ports = [{"protocol": "TCP", "port": spec.engine.port}]
    if spec.kv_events.enabled:
        ports.append({"protocol": "TCP", "port": spec.kv_events.port})
    peers: list[dict[str, Any]] = [
        {
            "namespaceSelector": {},
            "podSelector": {
                "matchExpressions": [
                    {
                        "key": labels.COMPONENT,
                        "operator": "In",
                        "values": [labels.COMPONENT_GATEWAY, labels.COMPONENT_OPERATOR],
                    }
                ]
            },
        },
        *spec.network_policy.extra_ingress_from,
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": object_labels(name),
            "ownerReferences": [owner_reference(name, uid)],
        },
        "spec": {
            "podSelector": {"matchLabels": selector_labels(name)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": ports}],
        },
    }
