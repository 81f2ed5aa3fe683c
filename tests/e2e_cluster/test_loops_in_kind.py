"""The operator's two control loops in a real cluster (kind): a ``ModelAutoscaler`` scaling a simulated model
from 1 to more replicas under load through the gateway Service and back when the load stops, and a
``LoRAAdapter`` loaded into the engine pods through their runtime LoRA API, served through the gateway and
unloaded when deleted.

What the loopback tier (``tests/e2e/test_autoscaler.py``, ``test_lora.py``) cannot show: the in-cluster
operator reaching the engine pods' and the gateway pods' IPs with its ServiceAccount's rights, gateway discovery
by label across the pod network, the chart's wiring of both controllers, and real pods started by a scale-up.

Note: the node's CNI (a static ``ptp`` config, hack/kind-node-image.sh) does not enforce NetworkPolicy, so the
engines' policy is present here but not exercised as a filter; its peers (gateway and operator labels) are
checked by the operator's unit tests.

The tests share one release and one ModelDeployment and run in file order."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.e2e_cluster.kind import CHART, ChatLoad, KindCluster, eventually
from tests.e2e_cluster.test_chart_in_kind import client, image_values, ready, sim_model

pytestmark = [pytest.mark.e2e_cluster, pytest.mark.timeout(600)]

RELEASE, NAMESPACE = "flotilla", "flotilla-loops"
MODEL, SERVED, ADAPTER = "sim-loops", "llama", "sql"
ENGINES = f"flotilla.dev/deployment={MODEL}"


@pytest.fixture(scope="module")
def release(kind_cluster: KindCluster, flotilla_image: str, redis_image: str) -> Iterator[KindCluster]:
    """The chart with one gateway (so no Redis: less for the small machine to run) and a simulated model with
    runtime LoRA enabled; everything deleted at the end, custom resources first (their finalizers need the
    operator)."""
    kind_cluster.helm(
        "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
        *image_values(flotilla_image, redis_image), "--set", "gateway.replicas=1", timeout=120,
    )  # fmt: skip
    try:
        kind_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(SIM_MODEL))
        yield kind_cluster
    finally:
        kind_cluster.kubectl(
            "delete", "modelautoscalers,loraadapters,modeldeployments", "--all", "-n", NAMESPACE, "--wait",
            timeout=180, check=False,
        )  # fmt: skip
        kind_cluster.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", timeout=180, check=False)


SIM_MODEL = sim_model(MODEL, NAMESPACE, replicas=1, lora={"enabled": True, "maxLoras": 2})


def get(cluster: KindCluster, kind: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(cluster.kubectl("get", kind, name, "-n", NAMESPACE, "-o", "json").stdout)
    return obj


def pods(cluster: KindCluster, selector: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def ready_engines(cluster: KindCluster) -> list[str]:
    return sorted(p["metadata"]["name"] for p in pods(cluster, ENGINES) if ready(p))


def wait_engines(cluster: KindCluster, n: int, timeout: float) -> None:
    """At least ``n`` Ready engine pods, or a failure that shows what the pods are doing."""
    try:
        eventually(lambda: len(ready_engines(cluster)) >= n, timeout=timeout, what=f"{n} Ready engine pod(s)")
    except AssertionError as e:
        described = cluster.kubectl("describe", "pods", "-n", NAMESPACE, "-l", ENGINES, check=False).stdout
        raise AssertionError(f"{e}\n{described[-5000:]}") from None


def engine_models(cluster: KindCluster, pod: str) -> set[str]:
    """What the engine itself serves (its own ``/v1/models``), through a port-forward to the pod."""
    with cluster.port_forward(f"pod/{pod}", 8000, NAMESPACE) as port:
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=10)
        with c:
            return {m.id for m in c.models.list().data}


def engine_successes(cluster: KindCluster, pod: str) -> float:
    """The engine's own ``vllm:request_success_total`` (summed over finish reasons): requests it served."""
    with cluster.port_forward(f"pod/{pod}", 8000, NAMESPACE) as port:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("vllm:request_success_total")
    )


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}


def test_lora_enabled_simulated_model_becomes_ready(release: KindCluster) -> None:
    release.kubectl(
        "rollout", "status", "deployment/flotilla-operator", "-n", NAMESPACE, "--timeout=240s", timeout=260
    )
    eventually(
        lambda: release.kubectl("get", "deployment", MODEL, "-n", NAMESPACE, check=False).returncode == 0,
        timeout=90, what=f"the operator creating Deployment {MODEL}",
    )  # fmt: skip
    wait_engines(release, 1, timeout=180)
    (engine,) = pods(release, ENGINES)
    (container,) = engine["spec"]["containers"]
    assert container["ports"][0]["containerPort"] == 8000
    assert "--enable-lora" in container["args"], container["args"]
    assert {"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "true"} in container["env"]
    release.kubectl(
        "rollout", "status", "deployment/flotilla-gateway", "-n", NAMESPACE, "--timeout=180s", timeout=200
    )


LORA = {
    "apiVersion": "flotilla.dev/v1alpha1",
    "kind": "LoRAAdapter",
    "metadata": {"name": ADAPTER, "namespace": NAMESPACE},
    # an hf:// source passes the chart's admission policy; the simulator accepts a Hub name without
    # downloading anything (a file:// path it checks exists in the pod, as vLLM does)
    "spec": {"baseModelDeployment": MODEL, "source": "hf://flotilla-test/sql-lora"},
}


def test_lora_adapter_loaded_into_engine_served_through_gateway_and_unloaded(release: KindCluster) -> None:
    (pod,) = ready_engines(release)
    release.kubectl("apply", "-f", "-", input=yaml.safe_dump(LORA))

    def adapter_ready() -> dict[str, Any] | None:
        obj = get(release, "loraadapters", ADAPTER)
        return obj if obj.get("status", {}).get("phase") == "Ready" else None

    adapter = eventually(adapter_ready, timeout=60, what="LoRAAdapter phase Ready")
    assert adapter is not None
    status = adapter["status"]
    assert status["loadedPods"] == [pod], status
    assert status["targetPods"] == [pod], status
    assert status["readyReplicas"] == status["desiredReplicas"] == 1, status
    assert conditions(adapter)["Ready"]["status"] == "True", status
    # loaded for real: the engine's own model list has it
    assert ADAPTER in engine_models(release, pod)
    events = release.kubectl(
        "get", "events", "-n", NAMESPACE, "--field-selector", f"involvedObject.name={ADAPTER}", "-o", "json"
    ).stdout
    assert any(f"Loaded on pod {pod}" in e["message"] for e in json.loads(events)["items"]), events[-2000:]

    with release.port_forward("service/flotilla-gateway", 80, NAMESPACE) as port, client(port) as c:

        def served() -> str:
            try:
                chat = c.chat.completions.create(
                    model=ADAPTER, messages=[{"role": "user", "content": "SELECT a greeting"}], max_tokens=8
                )
            except openai.NotFoundError as e:  # not yet in the gateway's catalog
                raise AssertionError(str(e)) from None
            assert chat.model == ADAPTER, chat.model
            return chat.choices[0].message.content or ""

        # the gateway learns the adapter from the engine's /v1/models (its next poll)
        assert eventually(served, timeout=30, what=f"a chat with model={ADAPTER} through the gateway")

        release.kubectl("delete", "loraadapter", ADAPTER, "-n", NAMESPACE, "--wait", timeout=90)
        assert ADAPTER not in engine_models(release, pod)

        def refused() -> bool:
            try:
                c.chat.completions.create(model=ADAPTER, messages=[{"role": "user", "content": "x"}])
            except openai.NotFoundError:
                return True
            return False

        eventually(refused, timeout=30, what=f"the gateway answering 404 for model={ADAPTER}")
        # the base model is untouched
        chat = c.chat.completions.create(
            model=SERVED, messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert chat.choices[0].message.content


AUTOSCALER = {
    "apiVersion": "flotilla.dev/v1alpha1",
    "kind": "ModelAutoscaler",
    "metadata": {"name": MODEL, "namespace": NAMESPACE},
    "spec": {
        "scaleTargetRef": {"name": MODEL},
        "minReplicas": 1,
        "maxReplicas": 3,
        # requests queued or in flight at the gateway, per pod
        "metrics": [{"name": "gateway_demand", "target": 2}],
        "algorithm": "KPA",
        "windows": {"stableSeconds": 8, "panicSeconds": 3},
        "cooldowns": {"scaleUpSeconds": 0, "scaleDownSeconds": 0},
        "syncPeriodSeconds": 1,
    },
}


def test_autoscaler_scales_up_under_gateway_load_and_back_down(release: KindCluster) -> None:
    """Eight clients keep requests in flight through the gateway Service (demand 8, target 2 per pod): the
    in-cluster autoscaler reads the gateway pod's demand metrics and scales the ModelDeployment up; new engine
    pods become Ready and take requests; once the load stops the stable window empties and it scales back to
    the minimum. Every request succeeds throughout."""
    release.kubectl("apply", "-f", "-", input=yaml.safe_dump(AUTOSCALER))

    def scaling_active() -> dict[str, Any] | None:
        obj = get(release, "modelautoscalers", MODEL)
        return obj if conditions(obj).get("ScalingActive", {}).get("status") == "True" else None

    eventually(scaling_active, timeout=60, what="ModelAutoscaler ScalingActive (the gateway's demand read)")

    content = "client {n} request {i}: tell a long story"
    with (
        release.port_forward("service/flotilla-gateway", 80, NAMESPACE) as port,
        client(port) as c,
        ChatLoad(c, SERVED, clients=8, content=content, max_tokens=200, join=60) as load,
    ):
        eventually(
            lambda: get(release, "md", MODEL)["spec"]["replicas"] >= 2,
            timeout=90, what="the autoscaler scaling the ModelDeployment up",
        )  # fmt: skip
        wait_engines(release, 2, timeout=120)
        scaled = get(release, "modelautoscalers", MODEL)
        served_before = len(load.done)
        eventually(
            lambda: len(load.done) >= served_before + 8, timeout=60, what="requests served after scale-up"
        )
        # the pods the scale-up started serve part of the load (each engine's own counter)
        served_by = {pod: engine_successes(release, pod) for pod in ready_engines(release)}
    assert load.failures == [], load.failures[:5]
    assert len([n for n in served_by.values() if n > 0]) >= 2, served_by
    status = scaled["status"]
    assert status["desiredReplicas"] >= 2, status
    assert status["lastScaleTime"], status
    (metric,) = status["metrics"]
    assert metric["name"] == "gateway_demand", metric
    assert conditions(scaled)["AbleToScale"]["status"] == "True", status

    def scaled_down() -> dict[str, Any] | None:
        obj = get(release, "modelautoscalers", MODEL)
        md = get(release, "md", MODEL)
        return obj if md["spec"]["replicas"] == 1 and obj["status"].get("desiredReplicas") == 1 else None

    down = eventually(scaled_down, timeout=90, what="the autoscaler scaling back to minReplicas once idle")
    assert down is not None
    assert conditions(down)["AbleToScale"]["status"] == "True", down["status"]
    assert conditions(down)["ScalingActive"]["status"] == "True", down["status"]
    eventually(lambda: len(pods(release, ENGINES)) == 1, timeout=90, what="the surplus engine pods gone")
