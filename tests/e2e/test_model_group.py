"""The GPU optimizer in the cluster, on the real API server: a ModelGroup over two GPU types (L4, A100-80GB),
sized from the request sizes the gateway sees and routed by size.

Topology as in test_autoscaler: the session operator runs the group daemons, a real ``flotilla gateway
--kubernetes`` runs on a kwok pod labelled as a gateway (how the operator finds it), engine pods get
simulators. Load goes through the gateway with the official openai client.

The profiles are inputs written here rather than measured (``flotilla profile`` takes minutes per GPU):
an L4 sustains 4 req/s within the SLO on prompts up to 256 tokens and cannot meet it beyond (TTFT), an
A100-80GB sustains 10 req/s on every size. With the built-in prices (0.80 vs 5.12 $/h) the solver must
put short prompts on L4s and long ones on A100s, so the two phases below have known answers:

1. short chats only → the plan is all L4 (the A100 member, started at 1, drains to 0); every short request
   lands on an L4 pod;
2. long prompts only → the plan moves to A100 (scaled up from 0) and the L4 member drains to 0; every long
   request lands on an A100 pod.

Each routing check runs while *both* types still have ready pods (the idle one held by the scale-down
stabilisation), so where requests land is the plan's doing, not the only pods left; the test then waits for
the idle type to drain. Windows are seconds long (observe 4 s, tick 1 s, scale-down stabilisation 8 s).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from flotilla import labels
from flotilla.sizes import DEFAULT_INPUT_BOUNDS, DEFAULT_OUTPUT_BOUNDS
from tests.e2e.conftest import OperatorProcess
from tests.e2e.controlplane import ControlPlane
from tests.e2e.helpers import eventually, get, md_manifest
from tests.e2e.podsim import PodSimulator
from tests.e2e.test_autoscaler import (
    GATEWAY_PORT,
    Gateway,
    Load,
    Replicas,
    events,
    gateway_pod,
    run_gateway,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

MODEL = "llama-8b"
SLO = {"ttft": 5.0, "tpot": 0.1, "attainment": 0.99}
SHORT = "tell me a story"
LONG = "lorem ipsum dolor " * 150  # ~450 tokens: the ≤1024 prompt bucket, where an L4 cannot serve


def profile(gpu: str, rate: float, max_input: int) -> str:
    max_rate = [
        [rate if i <= max_input else 0.0 for _ in DEFAULT_OUTPUT_BOUNDS] for i in DEFAULT_INPUT_BOUNDS
    ]
    return json.dumps({
        "gpu": gpu, "engine": "written by test_model_group", "model": MODEL,
        "input_bounds": list(DEFAULT_INPUT_BOUNDS), "output_bounds": list(DEFAULT_OUTPUT_BOUNDS),
        "tables": [{"slo": SLO, "max_rate": max_rate}],
    })  # fmt: skip


def apply(cluster: ControlPlane, body: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))


def profiles_configmap(ns: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "profiles", "namespace": ns},
        "data": data,
    }


def group(ns: str, name: str, members: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "ModelGroup",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"model": MODEL, "members": members, "slo": {"ttftSeconds": 5, "tpotSeconds": 0.1},
                 "profiles": {"configMapName": "profiles"}, **spec},
    }  # fmt: skip


def member_md(cluster: ControlPlane, name: str, ns: str, gpu: str | None, replicas: int) -> None:
    spec: dict[str, Any] = {"servedModelName": MODEL, "replicas": replicas, "engine": {"type": "simulator"}}
    if gpu:
        spec["gpuType"] = gpu
        spec["engine"]["simulator"] = {"preset": f"{gpu}-llama3-8b"}
    cluster.kubectl("apply", "-f", "-", input=md_manifest(name, ns, **spec))


@pytest.fixture
def debug_gateway(cluster: ControlPlane, ns: str, tmp_path: Path) -> Iterator[Gateway]:
    """The gateway with ``x-flotilla-endpoint`` on responses (which engine served each request)."""
    ip = gateway_pod(cluster, ns)
    env = {"FLOTILLA_GATEWAY_DEBUG_HEADERS": "true"}
    with run_gateway(cluster, ns, ip, GATEWAY_PORT, tmp_path / "gateway.log", env=env) as gw:
        yield gw


def status(cluster: ControlPlane, ns: str, name: str = "llama") -> dict[str, Any]:
    body = get(cluster, "mg", name, ns)
    return (body or {}).get("status") or {}


def planned(
    cluster: ControlPlane, ns: str, serving: str, idle: str, bucket: tuple[int, int], *, settled: bool
) -> dict[str, Any]:
    """The status once the plan gives ``bucket`` wholly to ``serving`` and ``serving`` has ready pods. With
    ``settled``: its desired (>= 1) replicas are all ready and ``idle`` is at 0; without: ``idle`` still has
    ready pods (held by the scale-down stabilisation), so a request could land on either type."""
    st = status(cluster, ns)
    split = {s["gpuType"]: s["shares"] for s in (st.get("plan") or {}).get("split") or []}
    members = {m["gpuType"]: m for m in st.get("members") or []}
    if (
        set(split) != {serving}
        or split[serving][bucket[0]][bucket[1]] != 1.0
        or set(members) != {serving, idle}
    ):
        return {}
    mds = {gpu: get(cluster, "md", m["name"], ns) or {} for gpu, m in members.items()}
    ready = {gpu: (md.get("status") or {}).get("readyReplicas") or 0 for gpu, md in mds.items()}
    if not settled:
        return st if ready[serving] >= 1 and ready[idle] >= 1 else {}
    want = members[serving]["desiredReplicas"]
    done = (
        want >= 1 and mds[serving]["spec"]["replicas"] == want and ready[serving] == want
        and members[idle]["desiredReplicas"] == 0 and mds[idle]["spec"]["replicas"] == 0
    )  # fmt: skip
    return st if done else {}


def gpu_of_endpoints(cluster: ControlPlane, ns: str) -> dict[str, str]:
    """``podIP:port`` -> the pod's GPU type label, for every engine pod of the namespace."""
    pods = json.loads(
        cluster.kubectl("get", "pods", "-n", ns, "-l", f"{labels.COMPONENT}=engine", "-o", "json").stdout
    )["items"]
    out = {}
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        port = pod["metadata"].get("annotations", {}).get(labels.ENGINE_PORT, str(labels.DEFAULT_ENGINE_PORT))
        if ip:
            out[f"{ip}:{port}"] = pod["metadata"]["labels"].get(labels.GPU_TYPE, "")
    return out


def healthy_types(cluster: ControlPlane, ns: str, gateway: Gateway) -> set[str]:
    """GPU types of the endpoints the gateway has in rotation now (``flotilla_gateway_endpoint_healthy``)."""
    text = httpx.get(f"{gateway.url}/metrics", timeout=5).text
    types = gpu_of_endpoints(cluster, ns)
    return {
        types.get(sample.labels["endpoint"], "")
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "flotilla_gateway_endpoint_healthy" and sample.value == 1
    }


def both_types_routable(
    cluster: ControlPlane, ns: str, gateway: Gateway, serving: str, idle: str, bucket: tuple[int, int]
) -> bool:
    """The plan gives ``bucket`` to ``serving`` while the gateway still has ready endpoints of *both* types
    (the idle one held by the scale-down stabilisation): where a request lands is then the plan's doing."""
    st = planned(cluster, ns, serving, idle, bucket, settled=False)
    return bool(st) and {serving, idle} <= healthy_types(cluster, ns, gateway)


def served_by(cluster: ControlPlane, ns: str, gateway: Gateway, prompt: str, n: int = 6) -> Counter[str]:
    """GPU types of the pods that served ``n`` requests of ``prompt`` (from ``x-flotilla-endpoint``)."""
    endpoints: list[str] = []
    with gateway.client() as client:
        for _ in range(n):
            raw = client.chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=32,
                extra_body={"ignore_eos": True},
            )  # fmt: skip
            endpoints.append(raw.headers[labels.HEADER_ENDPOINT])
    types = gpu_of_endpoints(cluster, ns)
    return Counter(types.get(e, f"unknown {e}") for e in endpoints)


def llama_on_l4_and_a100(cluster: ControlPlane, ns: str, *, a100_replicas: int) -> None:
    """Profiles for L4 and A100, one member ModelDeployment per type (L4 at 1 replica), and the group over
    them with a short window and stabilisation, as both traffic tests use it."""
    apply(cluster, profiles_configmap(ns, l4=profile("l4", 4.0, 256), a100=profile("a100-80gb", 10.0, 8192)))
    member_md(cluster, "llama-l4", ns, "l4", 1)
    member_md(cluster, "llama-a100", ns, "a100-80gb", a100_replicas)
    apply(cluster, group(
        ns, "llama",
        [{"name": "llama-l4", "maxReplicas": 4}, {"name": "llama-a100", "maxReplicas": 2}],
        windowSeconds=4, syncPeriodSeconds=1, stabilizationSeconds=8,
    ))  # fmt: skip


def test_a_workload_change_moves_replicas_between_gpu_types_and_sizes_route_by_the_plan(
    operator: OperatorProcess, pod_sims: PodSimulator, cluster: ControlPlane, ns: str, debug_gateway: Gateway
) -> None:
    llama_on_l4_and_a100(cluster, ns, a100_replicas=1)
    short_bucket = (0, 0)  # prompt ≤64, output ≤64
    long_bucket = (DEFAULT_INPUT_BOUNDS.index(1024), 0)

    with Load(debug_gateway, MODEL, workers=2, max_tokens=32, prompt=SHORT) as load:
        # both types have ready pods (the A100 one held by stabilisation): the plan alone decides
        eventually(
            lambda: both_types_routable(cluster, ns, debug_gateway, "l4", "a100-80gb", short_bucket),
            90,
            "L4 plan",
        )
        assert served_by(cluster, ns, debug_gateway, SHORT) == {"l4": 6}
        st = eventually(
            lambda: planned(cluster, ns, "l4", "a100-80gb", short_bucket, settled=True), 90, "A100 drained"
        )
    assert load.errors == []
    assert st["plan"]["costPerHour"] == st["costPerHour"] > 0
    conds = {c["type"]: (c["status"], c["reason"]) for c in st["conditions"]}
    assert conds == {"Planned": ("True", "Solved"), "Scaled": ("True", "DesiredReplicas")}
    assert st["observedGeneration"] == get(cluster, "mg", "llama", ns)["metadata"]["generation"]  # type: ignore[index]

    with Load(debug_gateway, MODEL, workers=2, max_tokens=32, prompt=LONG) as load:
        eventually(
            lambda: both_types_routable(cluster, ns, debug_gateway, "a100-80gb", "l4", long_bucket),
            90,
            "A100 plan",
        )
        assert served_by(cluster, ns, debug_gateway, LONG) == {"a100-80gb": 6}
        eventually(
            lambda: planned(cluster, ns, "a100-80gb", "l4", long_bucket, settled=True), 90, "L4 drained"
        )
    assert load.errors == []

    changes = [e["message"] for e in events(cluster, ns, "ModelGroup") if e["reason"] == "PlanChanged"]
    assert any(re.match(r"GPUs a100-80gb=0 l4=[1-9]", m) for m in changes), changes
    assert any(re.match(r"GPUs a100-80gb=[1-9] l4=0", m) for m in changes), changes
    table = cluster.kubectl("get", "mg", "llama", "-n", ns).stdout
    assert "GPUS" in table.splitlines()[0], table
    assert "l4=0" in table, table


def test_operator_restart_keeps_the_plan_and_moves_no_replica(
    operator: OperatorProcess, pod_sims: PodSimulator, cluster: ControlPlane, ns: str, debug_gateway: Gateway
) -> None:
    """The operator restarted while a settled group serves traffic: the new daemon starts with an empty
    window (``NoTraffic``: it holds) and then re-plans the same split, so no member's replicas move and the
    status keeps the plan and its cost."""
    llama_on_l4_and_a100(cluster, ns, a100_replicas=0)
    # one client: about half of one L4's profiled rate, so the plan is one L4 whatever the window's noise
    with Load(debug_gateway, MODEL, workers=1, max_tokens=32, prompt=SHORT) as load:
        before = eventually(
            lambda: planned(cluster, ns, "l4", "a100-80gb", (0, 0), settled=True), 90, "L4 plan"
        )
        histories = {name: Replicas(cluster, name, ns) for name in ("llama-l4", "llama-a100")}
        operator.stop()
        log_size = len(operator.output())
        operator.start()
        eventually(
            lambda: f"model group {ns}/llama: started" in operator.output()[log_size:],
            60,
            "the daemon runs again",
        )
        # past a whole window (4 s) and the stabilisation (8 s): the restarted loop has planned from fresh
        # traffic, and a scale-down it wanted would have been applied by now
        time.sleep(14)
        after = planned(cluster, ns, "l4", "a100-80gb", (0, 0), settled=True)
    assert load.errors == []
    l4 = desired(before, "l4")
    assert l4 >= 1
    moved = {name: h.stop() for name, h in histories.items()}
    assert moved == {"llama-l4": [l4], "llama-a100": [0]}, (
        f"a member's replicas moved across the restart: {moved}"
    )
    assert after, status(cluster, ns)
    assert after["costPerHour"] == before["costPerHour"]
    conds = {c["type"]: (c["status"], c["reason"]) for c in after["conditions"]}
    assert conds == {"Planned": ("True", "Solved"), "Scaled": ("True", "DesiredReplicas")}


def desired(st: dict[str, Any], gpu: str) -> int:
    return int(next(m["desiredReplicas"] for m in st["members"] if m["gpuType"] == gpu))


def test_invalid_groups_are_refused_or_reported(
    operator: OperatorProcess, cluster: ControlPlane, ns: str
) -> None:
    refused = cluster.kubectl(
        "apply", "-f", "-", check=False,
        input=yaml.safe_dump(group(ns, "bad", [{"name": "x", "minReplicas": 3, "maxReplicas": 1}])),
    )  # fmt: skip
    assert refused.returncode != 0
    assert "minReplicas must be <= maxReplicas" in refused.stderr
    refused = cluster.kubectl(
        "apply", "-f", "-", check=False,
        input=yaml.safe_dump(group(ns, "bad", [{"name": "x"}, {"name": "x"}])),
    )  # fmt: skip
    assert "each member may be listed once" in refused.stderr

    apply(cluster, profiles_configmap(ns, l4=profile("l4", 4.0, 256)))
    member_md(cluster, "untyped", ns, None, 0)
    member_md(cluster, "on-h100", ns, "h100-80gb", 0)
    apply(cluster, group(ns, "missing", [{"name": "nope"}], syncPeriodSeconds=1))
    apply(cluster, group(ns, "untyped", [{"name": "untyped"}], syncPeriodSeconds=1))
    apply(cluster, group(ns, "unprofiled", [{"name": "on-h100"}], syncPeriodSeconds=1))

    def reason(name: str) -> str | None:
        conds = {c["type"]: c for c in status(cluster, ns, name).get("conditions") or []}
        planned = conds.get("Planned")
        return planned["reason"] if planned and planned["status"] == "False" else None

    assert eventually(lambda: reason("missing"), 60, "MemberNotFound") == "MemberNotFound"
    assert eventually(lambda: reason("untyped"), 60, "MissingGpuType") == "MissingGpuType"
    assert eventually(lambda: reason("unprofiled"), 60, "NoProfile") == "NoProfile"
    warnings = {e["reason"] for e in events(cluster, ns, "ModelGroup") if e["type"] == "Warning"}
    assert {"MemberNotFound", "MissingGpuType", "NoProfile"} <= warnings
