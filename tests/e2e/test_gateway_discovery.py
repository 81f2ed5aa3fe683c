"""The gateway's Kubernetes discovery against the real API server: pods join and leave the rotation by watch.

The gateway runs in-process (its pool is inspected directly); the operator, kwok pods and the simulators on the
pod IPs are the shared e2e fixtures.
"""

from __future__ import annotations

import json
import threading

import httpx
import openai
import pytest

from flotilla import labels
from tests.e2e.conftest import OperatorProcess
from tests.e2e.controlplane import ControlPlane
from tests.e2e.helpers import eventually, md_manifest, wait_ready
from tests.e2e.podsim import PodSimulator
from tests.integration.gateway_harness import running_gateway

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(240),
    # the e2e apiserver's certificate is self-signed (kubeconfig: insecure-skip-tls-verify)
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
]


def _pod_ips(cluster: ControlPlane, ns: str) -> list[str]:
    pods = json.loads(
        cluster.kubectl("get", "pods", "-n", ns, "-l", f"{labels.DEPLOYMENT}=disc", "-o", "json").stdout
    )
    return sorted(p["status"]["podIP"] for p in pods["items"] if p["status"].get("podIP"))


def test_a_discovered_gateway_is_ready_before_any_model_exists(cluster: ControlPlane, ns: str) -> None:
    """``helm install --wait`` on a fresh cluster waits for the gateway's readiness: it must not depend on a
    ModelDeployment existing (a request for an unknown model gets a clear 404 meanwhile)."""
    with running_gateway(kubernetes=True, kubeconfig=str(cluster.kubeconfig), namespace=ns) as gw:
        eventually(lambda: httpx.get(gw.url + "/ready").status_code == 200, 30, "ready with no models")
        with (
            openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0, timeout=30) as client,
            pytest.raises(openai.NotFoundError),
        ):
            client.chat.completions.create(model="nothing-here", messages=[{"role": "user", "content": "x"}])


def test_pods_join_and_leave_the_rotation(
    operator: OperatorProcess, pod_sims: PodSimulator, cluster: ControlPlane, ns: str
) -> None:
    cluster.kubectl("apply", "-f", "-", input=md_manifest("disc", ns, servedModelName="disc-8b", replicas=2))
    wait_ready(cluster, "disc", ns, 2)
    with running_gateway(kubernetes=True, kubeconfig=str(cluster.kubeconfig), namespace=ns) as gw:

        def keys() -> set[str]:
            return {e.key.rsplit(":", 1)[0] for e in gw.gateway.fleet.pool if e.available}

        ips = _pod_ips(cluster, ns)
        eventually(lambda: keys() == set(ips), 60, "both pods in rotation")
        assert all(e.spec.model == "disc-8b" for e in gw.gateway.fleet.pool)

        cluster.kubectl("scale", "md/disc", "-n", ns, "--replicas=1")
        eventually(lambda: len(_pod_ips(cluster, ns)) == 1, 60, "scaled down")
        survivor = _pod_ips(cluster, ns)
        eventually(lambda: keys() == set(survivor), 60, "the removed pod left the rotation")
        with openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0, timeout=30) as client:
            for _ in range(4):
                raw = client.chat.completions.with_raw_response.create(
                    model="disc-8b", messages=[{"role": "user", "content": "hi"}], max_tokens=2
                )
                assert raw.headers["x-flotilla-endpoint"].rsplit(":", 1)[0] == survivor[0]


def test_a_model_at_zero_replicas_is_listed_and_its_first_request_waits_for_a_pod(
    operator: OperatorProcess, pod_sims: PodSimulator, cluster: ControlPlane, ns: str
) -> None:
    """The gateway learns models from ModelDeployments, not only from pods: at zero replicas the model is
    listed, a request for it is held, and it is served once a pod is Ready (here scaled by hand; the
    autoscaler does the same through /scale when it sees the held request)."""
    cluster.kubectl(
        "apply", "-f", "-",
        input=md_manifest("cold", ns, servedModelName="cold-8b", replicas=0, routingProfile="round-robin"),
    )  # fmt: skip
    with running_gateway(
        kubernetes=True, kubeconfig=str(cluster.kubeconfig), namespace=ns, hold_timeout=60
    ) as gw:
        eventually(lambda: "cold-8b" in gw.gateway.fleet.catalog, 30, "model declared by its ModelDeployment")
        with openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0, timeout=90) as client:
            assert "cold-8b" in {m.id for m in client.models.list().data}
            outcome: dict[str, object] = {}

            def ask() -> None:
                try:
                    outcome["reply"] = client.chat.completions.create(
                        model="cold-8b", messages=[{"role": "user", "content": "wake up"}], max_tokens=2
                    )
                except Exception as exc:  # reported below
                    outcome["error"] = exc

            thread = threading.Thread(target=ask)
            thread.start()
            eventually(lambda: gw.gateway.fleet.holding.queued.get("cold-8b") == 1, 30, "request held")
            cluster.kubectl("scale", "md/cold", "-n", ns, "--replicas=1")
            thread.join(90)
            assert "reply" in outcome, outcome
        # the ModelDeployment's routingProfile reached the gateway through the pod annotation
        assert gw.gateway.router.discovered_profiles.get("cold-8b") == "round-robin"
