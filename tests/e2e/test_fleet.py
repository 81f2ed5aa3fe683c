"""The whole loop on the real API server: ModelDeployment → operator → pods (kwok) → simulated engines on the
pod IPs → gateway discovering them by the label contract → the official openai client."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from flotilla import labels
from tests.e2e.conftest import OperatorProcess
from tests.e2e.controlplane import FLOTILLA, ControlPlane
from tests.e2e.helpers import eventually, md_manifest, wait_ready
from tests.e2e.podsim import PodSimulator
from tests.support import free_port, wait_for_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


@pytest.fixture
def gateway(cluster: ControlPlane, ns: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [FLOTILLA, "gateway", "--kubernetes", "--kubeconfig", str(cluster.kubeconfig), "--namespace", ns,
             "--host", "127.0.0.1", "--port", str(port), "--strategy", "round-robin"],
            stdout=out, stderr=subprocess.STDOUT, env=cluster.env(),
        )  # fmt: skip
    try:
        wait_for_port("127.0.0.1", port, 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def served_requests(ip: str) -> float:
    """Requests the engine on ``ip`` finished; 0 while its simulator is not listening yet."""
    try:
        text = httpx.get(f"http://{ip}:8000/metrics", timeout=5).text
    except httpx.HTTPError:
        return 0.0
    return sum(float(m) for m in re.findall(r"^vllm:request_success_total\{[^}]*\} ([0-9.e+]+)$", text, re.M))


def test_openai_client_through_the_gateway_reaches_every_pod_of_a_model_deployment(
    operator: OperatorProcess, pod_sims: PodSimulator, cluster: ControlPlane, ns: str, gateway: str
) -> None:
    cluster.kubectl(
        "apply", "-f", "-", input=md_manifest("fleet", ns, servedModelName="fleet-8b", replicas=2)
    )
    wait_ready(cluster, "fleet", ns, 2)
    cluster.kubectl("scale", "md/fleet", "-n", ns, "--replicas=3")
    wait_ready(cluster, "fleet", ns, 3)
    pods = json.loads(
        cluster.kubectl("get", "pods", "-n", ns, "-l", f"{labels.DEPLOYMENT}=fleet", "-o", "json").stdout
    )
    ips = sorted(p["status"]["podIP"] for p in pods["items"])
    assert len(ips) == 3
    eventually(
        lambda: sorted(ip for ip, _, _ in pod_sims.endpoints() if ip in ips) == ips, 60, "3 simulators"
    )

    with openai.OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0, timeout=30) as client:

        def models() -> list[str] | None:
            try:
                return [m.id for m in client.models.list().data]
            except openai.APIError:
                return None

        assert "fleet-8b" in eventually(models, 60, "the gateway lists the model")

        def all_pods_served() -> bool:
            for _ in range(6):
                reply = client.chat.completions.create(
                    model="fleet-8b", messages=[{"role": "user", "content": "hello"}], max_tokens=4
                )
                assert reply.choices[0].message.content is not None
            return all(served_requests(ip) > 0 for ip in ips)

        # the gateway learns pods from its watch: allow it to catch up with the scale-up
        eventually(all_pods_served, 90, "every pod served requests through the gateway")
    assert not pod_sims.errors, pod_sims.errors
