"""LoRAAdapters on the real API server: the operator places them on simulated engine pods and keeps them there.

Truth is read where it lives: which pods hold an adapter comes from each engine's own ``/v1/models`` on its
pod IP, and how often an adapter was loaded from the engine's ``flotilla_sim_lora_loads_total`` counter.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from typing import Any

import httpx
import openai
import pytest
import yaml

from flotilla import labels
from tests.e2e.conftest import OperatorProcess
from tests.e2e.controlplane import REPO, ControlPlane
from tests.e2e.helpers import eventually, get, md_manifest, wait_ready
from tests.e2e.podsim import PodSimulator
from tests.integration.gateway_harness import running_gateway

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
]


def lora_md(name: str, ns: str, replicas: int, max_loras: int, load_latency: float = 0.3) -> str:
    return md_manifest(
        name, ns, servedModelName=f"{name}-8b", replicas=replicas,
        lora={"enabled": True, "maxLoras": max_loras},
        engine={"args": ["--lora-load-latency", str(load_latency)]},
    )  # fmt: skip


def adapter(name: str, ns: str, base: str, replicas: int, source: str | None = None) -> str:
    body = {
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "LoRAAdapter",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"baseModelDeployment": base, "source": source or f"hf://org/{name}", "replicas": replicas},
    }
    return yaml.safe_dump(body)


def pods(cluster: ControlPlane, ns: str, md: str) -> dict[str, str]:
    """Running, not deleting engine pods of ``md``: name -> pod IP."""
    out = json.loads(
        cluster.kubectl("get", "pods", "-n", ns, "-l", f"{labels.DEPLOYMENT}={md}", "-o", "json").stdout
    )
    return {
        p["metadata"]["name"]: p["status"]["podIP"]
        for p in out["items"]
        if p["status"].get("podIP") and not p["metadata"].get("deletionTimestamp")
    }


def engine_adapters(ip: str) -> set[str] | None:
    try:
        cards = httpx.get(f"http://{ip}:8000/v1/models", timeout=3).json()["data"]
    except httpx.HTTPError:
        return None
    return {c["id"] for c in cards if c.get("parent")}


def holders(cluster: ControlPlane, ns: str, md: str, name: str) -> set[str]:
    """Pods whose engine lists ``name`` (asked on the pod IPs)."""
    return {pod for pod, ip in pods(cluster, ns, md).items() if name in (engine_adapters(ip) or set())}


def loads(ip: str, name: str) -> float:
    text = httpx.get(f"http://{ip}:8000/metrics", timeout=5).text
    pattern = rf'^flotilla_sim_lora_loads_total\{{lora_name="{re.escape(name)}"\}} ([0-9.e+]+)$'
    return sum(float(m) for m in re.findall(pattern, text, re.M))


def status(cluster: ControlPlane, ns: str, name: str) -> dict[str, Any]:
    body = get(cluster, "lora", name, ns) or {}
    return body.get("status") or {}


def condition(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or [] if c["type"] == type_), {})


def wait_engines_ready(cluster: ControlPlane, ns: str, md: str, n: int) -> dict[str, str]:
    def ok() -> dict[str, str] | None:
        current = pods(cluster, ns, md)
        alive = {p: ip for p, ip in current.items() if engine_adapters(ip) is not None}
        return alive if len(alive) == n == len(current) else None

    result: dict[str, str] = eventually(ok, 60, f"{n} engines of {md} answering")
    return result


def test_adapter_is_placed_served_re_placed_and_unloaded(
    operator: OperatorProcess, pod_sims: PodSimulator, cluster: ControlPlane, ns: str
) -> None:
    cluster.kubectl("apply", "-f", "-", input=lora_md("base", ns, replicas=3, max_loras=2))
    wait_ready(cluster, "base", ns, 3)
    wait_engines_ready(cluster, ns, "base", 3)
    cluster.kubectl("apply", "-f", "-", input=adapter("sql", ns, "base", replicas=2))

    st = eventually(lambda: (s := status(cluster, ns, "sql")).get("phase") == "Ready" and s, 30, "sql Ready")
    assert st["readyReplicas"] == 2
    assert st["desiredReplicas"] == 2
    assert condition(st, "Ready")["status"] == "True"
    assert condition(st, "Degraded")["status"] == "False"
    # exactly two engines list it, and they are the pods the status names
    assert holders(cluster, ns, "base", "sql") == set(st["loadedPods"])
    assert len(st["loadedPods"]) == 2

    table = cluster.kubectl("get", "lora", "-n", ns).stdout
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "MODEL", "DESIRED", "READY", "PHASE", "AGE"]
    assert row.split()[:5] == ["sql", "base", "2", "2", "Ready"]
    events = json.loads(
        cluster.kubectl(
            "get", "events", "-n", ns, "--field-selector", "involvedObject.name=sql", "-o", "json"
        ).stdout
    )["items"]
    loaded_events = sorted(e["message"] for e in events if e["reason"] == "Loaded")
    assert loaded_events == sorted(f"Loaded on pod {p}" for p in st["loadedPods"])

    with running_gateway(kubernetes=True, kubeconfig=str(cluster.kubeconfig), namespace=ns) as gw:
        hosts = {pods(cluster, ns, "base")[p] for p in st["loadedPods"]}

        def served() -> bool:
            return any("sql" in e.adapters for e in gw.gateway.fleet.pool if e.available)

        eventually(served, 30, "gateway learned the adapter from /v1/models")
        with openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0, timeout=30) as client:
            for _ in range(3):
                raw = client.chat.completions.with_raw_response.create(
                    model="sql", messages=[{"role": "user", "content": "hi"}], max_tokens=2
                )
                assert raw.http_response.status_code == 200
                assert raw.parse().model == "sql"
                assert raw.headers["x-flotilla-endpoint"].rsplit(":", 1)[0] in hosts

    # a hosting pod goes: the adapter is back to 2 replicas on other pods within 10 s
    victim = st["loadedPods"][0]
    cluster.kubectl("delete", "pod", victim, "-n", ns, "--wait=false")
    start = time.monotonic()

    def re_placed() -> set[str] | None:
        now = holders(cluster, ns, "base", "sql")
        return now if len(now) == 2 and victim not in now else None

    eventually(re_placed, 10, "sql re-placed after its pod was deleted")
    assert time.monotonic() - start < 10
    st = eventually(
        lambda: (s := status(cluster, ns, "sql")).get("readyReplicas") == 2 and victim not in s["loadedPods"] and s,
        10, "status follows the re-placement",
    )  # fmt: skip

    # deleted: unloaded from every engine before the object goes (finalizer)
    cluster.kubectl("delete", "lora", "sql", "-n", ns, "--wait=false")
    eventually(lambda: get(cluster, "lora", "sql", ns) is None, 30, "adapter object gone")
    for ip in pods(cluster, ns, "base").values():
        assert "sql" not in (engine_adapters(ip) or set())


def test_more_replicas_than_slots_is_reported(
    operator: OperatorProcess, pod_sims: PodSimulator, cluster: ControlPlane, ns: str
) -> None:
    cluster.kubectl("apply", "-f", "-", input=lora_md("tight", ns, replicas=2, max_loras=1))
    wait_ready(cluster, "tight", ns, 2)
    wait_engines_ready(cluster, ns, "tight", 2)
    cluster.kubectl("apply", "-f", "-", input=adapter("big", ns, "tight", replicas=3))

    def short() -> dict[str, Any] | None:
        st = status(cluster, ns, "big")
        return st if condition(st, "Degraded").get("reason") == "InsufficientCapacity" else None

    st = eventually(short, 30, "InsufficientCapacity")
    assert st["phase"] == "Degraded"
    assert st["readyReplicas"] == 2
    assert condition(st, "Ready")["status"] == "False"
    message = condition(st, "Degraded")["message"]
    assert "2 of 3 replicas placed" in message
    assert "maxLoras=1" in message
    assert len(holders(cluster, ns, "tight", "big")) == 2
    warnings = cluster.kubectl(
        "get", "events", "-n", ns, "--field-selector", "involvedObject.name=big,type=Warning"
    ).stdout
    assert "InsufficientCapacity" in warnings


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("hf://org/repo@main", "hf:// sources must be hf://<org>/<repo>"),
        ("file://relative/dir", "file:// sources must be an absolute path"),
        ("file:///models/../etc", "file:// sources must be an absolute path"),
        ("https://user:pw@example.com/a.tar", "must not carry credentials"),
        ("pvc://claim/path", "source must be a URL with one of the schemes"),
    ],
    ids=["hf-revision", "file-relative", "file-dotdot", "https-credentials", "pvc-unsupported"],
)
def test_bad_sources_are_refused_at_admission(crds: ControlPlane, ns: str, source: str, message: str) -> None:
    proc = crds.kubectl("apply", "-f", "-", input=adapter("bad", ns, "base", 1, source), check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


def test_restarted_operator_converges_without_duplicate_loads(
    operator: OperatorProcess, pod_sims: PodSimulator, cluster: ControlPlane, ns: str
) -> None:
    # loads take 3 s on the engines, so the operator is stopped while they are in flight
    cluster.kubectl("apply", "-f", "-", input=lora_md("slow", ns, replicas=3, max_loras=2, load_latency=3))
    wait_ready(cluster, "slow", ns, 3)
    ips = wait_engines_ready(cluster, ns, "slow", 3)
    mark = len(operator.output())
    cluster.kubectl("apply", "-f", "-", input=adapter("r1", ns, "slow", replicas=2)
                    + "---\n" + adapter("r2", ns, "slow", replicas=2))  # fmt: skip
    eventually(lambda: "load r1 on" in operator.output()[mark:], 30, "loads started")
    try:
        assert not holders(cluster, ns, "slow", "r1")  # really mid-placement: nothing finished yet
    finally:
        operator.stop()
        operator.start()
    for name in ("r1", "r2"):
        eventually(lambda n=name: status(cluster, ns, n).get("phase") == "Ready", 60, f"{name} Ready")
        where = holders(cluster, ns, "slow", name)
        assert len(where) == 2
        counted = {pod: loads(ip, name) for pod, ip in ips.items()}
        assert sum(counted.values()) == 2, counted  # one load per replica, none repeated after the restart
        assert {pod for pod, n in counted.items() if n} == where


SSRF_DENIED = [
    "https://127.0.0.1/a", "https://169.254.169.254/latest/meta-data", "https://[::1]/a",
    "https://[fd00:ec2::254]/a", "https://10.0.0.5/a", "https://192.168.1.1/a", "https://localhost/a",
    "https://metadata.google.internal/a", "https://minio.storage.svc/a", "https://minio.storage.svc.cluster.local/a",
    "https://intranet/a", "https://2130706433/a", "https://0x7f.1/a",
]  # fmt: skip


def test_https_sources_at_internal_hosts_are_refused_unless_allow_listed(crds: ControlPlane, ns: str) -> None:
    """The chart's ValidatingAdmissionPolicy on the real API server (rendered by helm, applied as shipped)."""
    release = f"ssrf-{ns[-8:]}"
    rendered = subprocess.run(
        [str(crds.bin_dir / "helm"), "template", release, str(REPO / "charts" / "flotilla"), "--namespace", ns,
         "--kube-version", "1.34.0", "--show-only", "templates/lora-admission.yaml",
         "--set", "admission.loraSources.allowedHosts={10.1.2.3,.models.svc.cluster.local}"],
        capture_output=True, text=True, check=True, env=crds.env(),
    ).stdout  # fmt: skip
    crds.kubectl("apply", "-f", "-", input=rendered)
    try:

        def admit(source: str) -> str:
            proc = crds.kubectl(
                "apply",
                "--dry-run=server",
                "-f",
                "-",
                input=adapter("src", ns, "base", 1, source),
                check=False,
            )
            return "ok" if proc.returncode == 0 else proc.stderr

        # the policy is compiled asynchronously after it is created: wait until it denies
        # and its parameter (the ConfigMap) is picked up by the API server's informer a moment later
        answers: list[str] = []

        def in_force() -> bool:
            answers.append(admit("https://127.0.0.1/a"))
            return "is loopback" in answers[-1]

        try:
            eventually(in_force, 60, "policy and its parameter in force")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last answers: {answers[-2:]}") from None
        for source in SSRF_DENIED:
            answer = admit(source)
            assert answer != "ok", source
            assert "is loopback, link-local (metadata), private or" in answer, answer
            assert "admission.loraSources.allowedHosts" in answer
        for source in ("https://huggingface.co/org/a.tar", "https://10.1.2.3/a",
                       "https://store.models.svc.cluster.local/a", "hf://org/a"):  # fmt: skip
            assert admit(source) == "ok", source
    finally:
        crds.kubectl("delete", "-f", "-", input=rendered, check=False)


def test_requests_are_held_not_404_while_the_only_replica_is_re_placed(
    operator: OperatorProcess, pod_sims: PodSimulator, cluster: ControlPlane, ns: str
) -> None:
    # loads take 3 s, so requests arrive while no engine holds the adapter
    cluster.kubectl("apply", "-f", "-", input=lora_md("solo", ns, replicas=2, max_loras=1, load_latency=3))
    wait_ready(cluster, "solo", ns, 2)
    wait_engines_ready(cluster, ns, "solo", 2)
    cluster.kubectl("apply", "-f", "-", input=adapter("one", ns, "solo", replicas=1))
    st = eventually(lambda: (s := status(cluster, ns, "one")).get("phase") == "Ready" and s, 30, "one Ready")
    (host,) = st["loadedPods"]
    host_ip = pods(cluster, ns, "solo")[host]
    with running_gateway(kubernetes=True, kubeconfig=str(cluster.kubeconfig), namespace=ns) as gw:
        eventually(
            lambda: any("one" in e.adapters for e in gw.gateway.fleet.pool if e.available), 30, "adapter seen"
        )
        cluster.kubectl("delete", "pod", host, "-n", ns, "--wait=false")
        eventually(lambda: engine_adapters(host_ip) is None, 10, "the hosting engine is gone")
        with openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0, timeout=40) as client:
            served_by = set()
            for _ in range(4):  # the first ones arrive while no engine has it: held, then served
                raw = client.chat.completions.with_raw_response.create(
                    model="one", messages=[{"role": "user", "content": "hi"}], max_tokens=2
                )
                assert raw.http_response.status_code == 200
                served_by.add(raw.headers["x-flotilla-endpoint"].rsplit(":", 1)[0])
    new_hosts = holders(cluster, ns, "solo", "one")
    assert len(new_hosts) == 1
    assert host not in new_hosts
    assert served_by == {pods(cluster, ns, "solo")[p] for p in new_hosts}
