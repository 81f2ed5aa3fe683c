"""The ModelAutoscaler controller on the real API server: load through a gateway scales a ModelDeployment up
and back down, a model at zero serves its first request after a cold start, status/columns/conditions/Events
are right, invalid autoscalers are refused or reported, and an operator restart mid-scale does not flap.

Topology (everything on loopback): the session operator runs the autoscaler daemons; a kwok pod labelled
``flotilla.dev/component=gateway`` gets a real ``flotilla gateway --kubernetes`` bound to its pod IP, so the
operator finds the gateway exactly as in a cluster (by label, ``http`` container port); engine pods get
simulators (``podsim``), with ``sim.flotilla.test/args`` for cold starts. Windows are seconds long.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from flotilla import labels
from tests.e2e.conftest import OperatorProcess
from tests.e2e.controlplane import FLOTILLA, ControlPlane
from tests.e2e.helpers import eventually, get, md_manifest, peering_priorities
from tests.e2e.podsim import SIM_ARGS, PodSimulator
from tests.support import free_port, wait_for_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

GATEWAY_PORT = 8080


@dataclass
class Gateway:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def client(self, timeout: float = 60) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0, timeout=timeout)


@pytest.fixture
def gateway(cluster: ControlPlane, ns: str, tmp_path: Path) -> Iterator[Gateway]:
    """A real gateway process on the IP of a kwok pod labelled as a gateway (how the operator finds it)."""
    ip = gateway_pod(cluster, ns)
    with run_gateway(cluster, ns, ip, GATEWAY_PORT, tmp_path / "gateway.log") as gw:
        yield gw


def gateway_pod(cluster: ControlPlane, ns: str) -> str:
    """A kwok pod labelled as a gateway with an ``http`` port (how the operator finds gateways); its IP."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "gateway", "namespace": ns,
                     "labels": {labels.COMPONENT: labels.COMPONENT_GATEWAY}},
        "spec": {"containers": [{"name": "gateway", "image": "flotilla:e2e",
                                 "ports": [{"name": "http", "containerPort": GATEWAY_PORT}]}]},
    }  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(pod))

    def pod_ip() -> str | None:
        body = get(cluster, "pod", "gateway", ns)
        return ((body or {}).get("status") or {}).get("podIP")

    ip: str = eventually(pod_ip, 60, "the gateway pod has an IP")
    return ip


@contextlib.contextmanager
def run_gateway(
    cluster: ControlPlane, ns: str, host: str, port: int, log: Path, env: dict[str, str] | None = None
) -> Iterator[Gateway]:
    """``flotilla gateway --kubernetes`` for namespace ``ns`` on ``host:port`` (``env``: extra variables)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [FLOTILLA, "gateway", "--kubernetes", "--kubeconfig", str(cluster.kubeconfig), "--namespace", ns,
             "--host", host, "--port", str(port), "--strategy", "round-robin"],
            stdout=out, stderr=subprocess.STDOUT, env={**cluster.env(), **(env or {})},
        )  # fmt: skip
    try:
        wait_for_port(host, port, 30)
        yield Gateway(f"http://{host}:{port}", proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def mas_manifest(name: str, ns: str, target: str, **spec: Any) -> str:
    body = {
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "ModelAutoscaler",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"scaleTargetRef": {"name": target}, **spec},
    }
    return yaml.safe_dump(body)


FAST = {
    "windows": {"stableSeconds": 6, "panicSeconds": 2},
    "cooldowns": {"scaleUpSeconds": 0, "scaleDownSeconds": 3},
    "syncPeriodSeconds": 1,
}


@dataclass
class Load:
    """``workers`` threads sending chat completions through the gateway with the official client."""

    gateway: Gateway
    model: str
    workers: int
    max_tokens: int = 120
    prompt: str = "tell me a story"
    errors: list[str] = field(default_factory=list)
    done: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        with self.gateway.client() as client:
            while not self._stop.is_set():
                try:
                    client.chat.completions.create(
                        model=self.model, messages=[{"role": "user", "content": self.prompt}],
                        max_tokens=self.max_tokens, extra_body={"ignore_eos": True},
                    )  # fmt: skip
                    self.done += 1
                except openai.APIError as exc:
                    self.errors.append(repr(exc))
                    time.sleep(0.2)

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.workers)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def __exit__(self, *_: object) -> None:
        self.stop()


class Replicas:
    """Samples the ModelDeployment's spec.replicas every 0.3 s, to check the history for flapping."""

    def __init__(self, cluster: ControlPlane, name: str, ns: str) -> None:
        self.cluster, self.name, self.ns = cluster, name, ns
        self.history: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        md = get(self.cluster, "md", self.name, self.ns)
        if md is not None:
            value = int(md["spec"].get("replicas", 0))
            if not self.history or self.history[-1] != value:
                self.history.append(value)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(0.3)

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(10)
        self._sample()  # the value the caller has just seen, even if the last poll predates it
        return self.history


def replicas(cluster: ControlPlane, name: str, ns: str) -> int:
    md = get(cluster, "md", name, ns)
    assert md is not None
    return int(md["spec"]["replicas"])


def mas_status(cluster: ControlPlane, name: str, ns: str) -> dict[str, Any]:
    body = get(cluster, "mas", name, ns)
    assert body is not None
    return body.get("status") or {}


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions") or []}


def events(cluster: ControlPlane, ns: str, kind: str = "ModelAutoscaler") -> list[dict[str, Any]]:
    items = json.loads(cluster.kubectl("get", "events", "-n", ns, "-o", "json").stdout)["items"]
    return [e for e in items if e["involvedObject"]["kind"] == kind]


def monotone_runs(history: list[int]) -> int:
    """How many times the direction of change reversed (0 = up then down at most once)."""
    steps = [b - a for a, b in itertools.pairwise(history)]
    return sum(1 for x, y in itertools.pairwise(steps) if x * y < 0)


def test_load_scales_a_model_deployment_up_and_back_down(
    operator: OperatorProcess, pod_sims: PodSimulator, cluster: ControlPlane, ns: str, gateway: Gateway
) -> None:
    annotations = {SIM_ARGS: "--max-num-seqs 4"}
    cluster.kubectl("apply", "-f", "-", input=md_manifest(
        "chat", ns, servedModelName="chat-8b", replicas=1,
        podTemplate={"metadata": {"annotations": annotations}},
    ))  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=mas_manifest(
        "chat", ns, "chat", minReplicas=1, maxReplicas=4,
        metrics=[{"name": "num_requests_running", "target": 2}, {"name": "num_requests_waiting", "target": 2},
                 # read from the gateway pod, with a target too high to decide anything
                 {"name": "gateway_requests_per_second", "target": 1000}],
        **FAST,
    ))  # fmt: skip
    eventually(
        lambda: mas_status(cluster, "chat", ns).get("currentReplicas") == 1, 60, "the autoscaler reads md"
    )
    with gateway.client() as client:
        eventually(
            lambda: "chat-8b" in [m.id for m in client.models.list().data], 60, "the gateway serves it"
        )
    history = Replicas(cluster, "chat", ns)
    with Load(gateway, "chat-8b", workers=12) as load:
        eventually(lambda: replicas(cluster, "chat", ns) == 4, 90, "scaled up to maxReplicas under load")
        eventually(
            lambda: conditions(mas_status(cluster, "chat", ns)).get("ScalingLimited") == ("True", "TooManyReplicas"),
            30, "ScalingLimited=TooManyReplicas while the load wants more",
        )  # fmt: skip
        loaded = mas_status(cluster, "chat", ns)
        time.sleep(4)  # steady load at the maximum: the count holds
        assert replicas(cluster, "chat", ns) == 4
    assert load.done > 0
    assert not load.errors, load.errors[:3]
    stopped = time.monotonic()
    eventually(lambda: replicas(cluster, "chat", ns) == 1, 90, "back to minReplicas after the load stops")
    # not before the stable window (6 s) has absorbed the drop
    assert time.monotonic() - stopped > 3
    final = history.stop()
    assert (final[0], max(final), final[-1]) == (1, 4, 1), final
    assert monotone_runs(final) <= 1, f"the count flapped: {final}"

    by_name = {m["name"]: m for m in loaded["metrics"]}
    assert by_name["num_requests_running"]["total"] > 0
    assert by_name["num_requests_running"]["target"] == 2
    assert by_name["gateway_requests_per_second"]["total"] > 0  # arrivals seen at the gateway
    assert loaded["desiredReplicas"] == 4
    assert loaded["lastScaleTime"]
    # the tick after the last scale-down: the idle load wants 0 and minReplicas holds it at 1
    eventually(
        lambda: conditions(mas_status(cluster, "chat", ns)).get("ScalingLimited") == ("True", "TooFewReplicas"),
        30, "ScalingLimited=TooFewReplicas when idle",
    )  # fmt: skip
    status = mas_status(cluster, "chat", ns)
    assert (status["currentReplicas"], status["desiredReplicas"]) == (1, 1)
    assert conditions(status)["ScalingActive"] == ("True", "ValidMetricFound")
    assert conditions(status)["AbleToScale"][0] == "True"
    rescales = [e for e in events(cluster, ns) if e["reason"] == "SuccessfulRescale"]
    sizes = [int(e["message"].split(";")[0].removeprefix("New size: ")) for e in sorted(
        rescales, key=lambda e: e["metadata"]["creationTimestamp"])]  # fmt: skip
    assert 4 in sizes, sizes
    assert sizes[-1] == 1, sizes
    table = cluster.kubectl("get", "mas", "chat", "-n", ns).stdout.split("\n")
    assert table[0].split() == ["NAME", "TARGET", "MIN", "MAX", "CURRENT", "DESIRED", "AGE"]
    assert table[1].split()[:6] == ["chat", "chat", "1", "4", "1", "1"]
    assert not pod_sims.errors, pod_sims.errors


def test_missing_target_is_reported_and_invalid_autoscalers_are_refused(
    operator: OperatorProcess, cluster: ControlPlane, ns: str
) -> None:
    cluster.kubectl("apply", "-f", "-", input=mas_manifest(
        "orphan", ns, "nothing-here", maxReplicas=2, metrics=[{"name": "num_requests_running", "target": 4}],
        syncPeriodSeconds=1,
    ))  # fmt: skip

    def reported() -> bool:
        conds = conditions(mas_status(cluster, "orphan", ns))
        return (
            conds.get("AbleToScale") == ("False", "FailedGetScale")
            and conds.get("ScalingActive", ("",))[0] == "False"
        )

    eventually(reported, 60, "AbleToScale=False/FailedGetScale")
    message = next(
        c["message"] for c in mas_status(cluster, "orphan", ns)["conditions"] if c["type"] == "AbleToScale"
    )
    assert "ModelDeployment nothing-here does not exist" in message
    # a target that exists but cannot be scaled is told apart from a missing one
    cluster.kubectl("create", "configmap", "settings", "-n", ns)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "ModelAutoscaler", "metadata": {"name": "cm", "namespace": ns},
        "spec": {"scaleTargetRef": {"apiVersion": "v1", "kind": "ConfigMap", "name": "settings"}, "maxReplicas": 2,
                 "metrics": [{"name": "num_requests_running", "target": 4}], "syncPeriodSeconds": 1},
    }))  # fmt: skip

    def no_scale() -> str:
        conds = mas_status(cluster, "cm", ns).get("conditions") or []
        return next((c["message"] for c in conds if c["type"] == "AbleToScale"), "")

    assert "ConfigMap settings has no /scale subresource" in eventually(no_scale, 60, "no /scale reported")
    warnings = [
        e for e in events(cluster, ns)
        if e["reason"] == "FailedGetScale" and e["involvedObject"]["name"] == "orphan"
    ]  # fmt: skip
    assert len(warnings) == 1
    assert warnings[0]["type"] == "Warning"

    invalid = [
        ({"minReplicas": 3, "maxReplicas": 2, "metrics": [{"name": "kv_cache_usage", "target": 0.8}]},
         "minReplicas must be <= maxReplicas"),
        ({"maxReplicas": 2, "metrics": [{"name": "gpu_utilisation", "target": 0.8}]}, "Unsupported value"),
        ({"maxReplicas": 2, "metrics": [{"name": "ttft_p95", "target": 1}, {"name": "ttft_p95", "target": 2}]},
         "each metric may be listed once"),
        ({"maxReplicas": 2, "metrics": [{"name": "ttft_p95", "target": 0}]}, "should be greater than 0"),
        ({"maxReplicas": 2, "metrics": [{"name": "ttft_p95", "target": 1}],
          "windows": {"stableSeconds": 5, "panicSeconds": 5}}, "panicSeconds must be shorter"),
        ({"maxReplicas": 2, "metrics": [{"name": "ttft_p95", "target": 1}], "algorithm": "HPA"},
         "Unsupported value"),
    ]  # fmt: skip
    for spec, message in invalid:
        proc = cluster.kubectl("apply", "-f", "-", input=mas_manifest("bad", ns, "x", **spec), check=False)
        assert proc.returncode != 0, spec
        assert message in proc.stderr, proc.stderr


def test_operator_restart_mid_scale_neither_flaps_nor_forgets(
    operator: OperatorProcess, pod_sims: PodSimulator, cluster: ControlPlane, ns: str, gateway: Gateway
) -> None:
    cluster.kubectl("apply", "-f", "-", input=md_manifest(
        "rs", ns, servedModelName="rs-8b", replicas=1,
        podTemplate={"metadata": {"annotations": {SIM_ARGS: "--max-num-seqs 4"}}},
    ))  # fmt: skip
    cooldown = 20
    cluster.kubectl("apply", "-f", "-", input=mas_manifest(
        "rs", ns, "rs", minReplicas=1, maxReplicas=4, algorithm="APA",  # the other policy, end to end
        metrics=[{"name": "num_requests_waiting", "target": 2}],
        **{**FAST, "cooldowns": {"scaleUpSeconds": 0, "scaleDownSeconds": cooldown}},
    ))  # fmt: skip
    with gateway.client() as client:
        eventually(lambda: "rs-8b" in [m.id for m in client.models.list().data], 60, "the gateway serves it")
    history = Replicas(cluster, "rs", ns)
    with Load(gateway, "rs-8b", workers=12):
        eventually(lambda: replicas(cluster, "rs", ns) >= 2, 90, "a scale-up under load")
        operator.stop()  # mid-scale: the load is still on, the count may still be rising
    up = replicas(cluster, "rs", ns)
    scaled_at = mas_status(cluster, "rs", ns)["lastScaleTime"]
    log_size = len(operator.output())
    operator.start()
    restarted = time.monotonic()
    eventually(
        lambda: f"autoscaler {ns}/rs: started" in operator.output()[log_size:], 60, "the daemon runs again"
    )
    # the load is gone, but the last scale-up was < cooldown ago and the new windows are empty: hold
    time.sleep(8)
    status = mas_status(cluster, "rs", ns)
    assert replicas(cluster, "rs", ns) == up, history.history
    assert status["lastScaleTime"] == scaled_at  # persisted and read back, not reset by the restart
    eventually(lambda: replicas(cluster, "rs", ns) == 1, 90, "down after the persisted cooldown")
    assert time.monotonic() - restarted > 6
    final = history.stop()
    assert monotone_runs(final) <= 1, f"the count flapped across the restart: {final}"


def test_a_model_at_zero_serves_its_first_request_after_a_cold_start(
    operator: OperatorProcess, pod_sims: PodSimulator, cluster: ControlPlane, ns: str, gateway: Gateway
) -> None:
    cold_start = 3.0
    cluster.kubectl("apply", "-f", "-", input=md_manifest(
        "cold", ns, servedModelName="cold-8b", replicas=0,
        podTemplate={"metadata": {"annotations": {SIM_ARGS: f"--startup-delay {cold_start}"}}},
    ))  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=mas_manifest(
        "cold", ns, "cold", minReplicas=0, maxReplicas=2, scaleToZeroGraceSeconds=3,
        metrics=[{"name": "gateway_demand", "target": 4}, {"name": "num_requests_running", "target": 4}],
        **FAST,
    ))  # fmt: skip
    with gateway.client() as client:
        # the gateway knows the model from the ModelDeployment (its catalog) although no pod serves it
        eventually(lambda: "cold-8b" in [m.id for m in client.models.list().data], 60, "the catalog lists it")
    eventually(
        lambda: mas_status(cluster, "cold", ns).get("currentReplicas") == 0, 30, "the autoscaler reads 0"
    )
    time.sleep(3)
    assert replicas(cluster, "cold", ns) == 0  # no demand, no pod
    history = Replicas(cluster, "cold", ns)
    started = time.monotonic()
    with gateway.client(timeout=60) as client:
        reply = client.chat.completions.create(
            model="cold-8b", messages=[{"role": "user", "content": "hello"}], max_tokens=8
        )
    waited = time.monotonic() - started
    assert reply.choices[0].message.content
    assert waited >= cold_start, waited  # held at the gateway while the pod was loading
    rescales = [e["message"] for e in events(cluster, ns) if e["reason"] == "SuccessfulRescale"]
    assert any(m.startswith("New size: 1;") and "waiting at the gateway" in m for m in rescales), rescales
    # no more traffic: the last pod goes after the grace period (and the down cooldown / stable window)
    eventually(lambda: replicas(cluster, "cold", ns) == 0, 60, "back to zero after the grace period")
    assert history.stop() == [0, 1, 0]
    status = mas_status(cluster, "cold", ns)
    assert status["lastActiveTime"]
    assert conditions(status)["ScalingActive"] == ("True", "ValidMetricFound")


def test_only_the_active_operator_replica_runs_autoscalers(
    operator: OperatorProcess, pod_sims: PodSimulator, cluster: ControlPlane, ns: str, tmp_path: Path
) -> None:
    standby = OperatorProcess(cluster, tmp_path / "standby.log", "--priority", "10")
    standby.start()
    try:
        eventually(
            lambda: peering_priorities(cluster) == [10, 100], 60, "both replicas in the peering object"
        )
        cluster.kubectl("apply", "-f", "-", input=md_manifest("peer", ns, replicas=1))
        cluster.kubectl("apply", "-f", "-", input=mas_manifest(
            "peer", ns, "peer", minReplicas=1, maxReplicas=2,
            metrics=[{"name": "num_requests_running", "target": 4}], **FAST,
        ))  # fmt: skip
        started = f"autoscaler {ns}/peer: started"
        eventually(lambda: started in operator.output(), 60, "the active replica runs the autoscaler")
        eventually(
            lambda: mas_status(cluster, "peer", ns).get("readyReplicas") == 1, 60, "it scrapes the pod"
        )
        time.sleep(3)
        assert started not in standby.output()  # the standby stood by

        operator.stop()  # fail-over: the standby resumes and starts the daemon, from the persisted status
        eventually(lambda: started in standby.output(), 60, "the standby took over the autoscaler")
        assert replicas(cluster, "peer", ns) == 1
        # the new active replica acts: a manual scale above maxReplicas (with no load) is undone at once,
        # past the windows and cooldowns, which only hold back scale-downs within the bounds
        cluster.kubectl("scale", "md/peer", "-n", ns, "--replicas=3")
        eventually(
            lambda: any(e["message"].startswith("New size: 1;") for e in events(cluster, ns)
                        if e["reason"] == "SuccessfulRescale"),
            60, "the new active replica scales the target back",
        )  # fmt: skip
        assert replicas(cluster, "peer", ns) == 1
    finally:
        standby.stop()
        if operator.proc is None:
            operator.start()


def test_gateways_given_by_flag_drive_scale_from_zero(
    operator: OperatorProcess, pod_sims: PodSimulator, cluster: ControlPlane, ns: str, tmp_path: Path
) -> None:
    """A gateway outside the cluster (``--gateway-metrics-url``), read by an operator replica that takes over
    from the session operator by a higher peering priority (and hands back when it stops)."""
    port = free_port()
    with run_gateway(cluster, ns, "127.0.0.1", port, tmp_path / "gateway.log") as gw:
        flagged = OperatorProcess(
            cluster, tmp_path / "flagged.log", "--priority", "200",
            "--gateway-metrics-url", gw.url, "--no-gateway-discovery",
        )  # fmt: skip
        flagged.start()
        try:

            def priorities() -> list[int]:
                body = json.loads(
                    cluster.kubectl("get", "clusterkopfpeering", "flotilla", "-o", "json").stdout
                )
                return [p["priority"] for p in (body.get("status") or {}).values()]

            eventually(lambda: 200 in priorities(), 60, "the flagged replica joined the peering")
            time.sleep(2)  # the session operator (priority 100) pauses
            cluster.kubectl(
                "apply", "-f", "-", input=md_manifest("flag", ns, servedModelName="flag-8b", replicas=0)
            )
            cluster.kubectl("apply", "-f", "-", input=mas_manifest(
                "flag", ns, "flag", minReplicas=0, maxReplicas=1, scaleToZeroGraceSeconds=3,
                metrics=[{"name": "gateway_demand", "target": 4}], **FAST,
            ))  # fmt: skip
            started = f"autoscaler {ns}/flag: started"
            eventually(lambda: started in flagged.output(), 60, "the flagged replica runs the autoscaler")
            with gw.client() as client:
                eventually(lambda: "flag-8b" in [m.id for m in client.models.list().data], 60, "catalog")
                reply = client.chat.completions.create(
                    model="flag-8b", messages=[{"role": "user", "content": "hi"}], max_tokens=4
                )
            assert reply.choices[0].message.content
            assert started not in operator.output()  # paused by the higher priority
            rescales = [e["message"] for e in events(cluster, ns) if e["reason"] == "SuccessfulRescale"]
            assert any(m.startswith("New size: 1;") for m in rescales), rescales
        finally:
            flagged.stop()
