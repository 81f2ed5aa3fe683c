"""The Helm chart in a real cluster (kind): the image's real pods, RBAC as the ServiceAccounts see it, a
simulated model deployed by the in-cluster operator, the official ``openai`` client through the gateway
Service, an engine pod killed under load, and ``helm upgrade`` / ``helm uninstall`` leaving nothing behind.

The tests share one release and run in file order (each builds on the state the previous one reached)."""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import yaml

from tests.e2e_cluster.kind import CHART, ChatLoad, KindCluster, eventually

pytestmark = [pytest.mark.e2e_cluster, pytest.mark.timeout(900)]

RELEASE, NAMESPACE = "flotilla", "flotilla-system"
MODEL, SERVED = "sim-llama", "llama"
#: every kind of object the chart (or the operator for it) may create, for the "nothing left" check
KINDS = (
    "deployments,replicasets,pods,services,serviceaccounts,configmaps,secrets,roles,rolebindings,"
    "networkpolicies,clusterroles,clusterrolebindings,validatingadmissionpolicies,"
    "validatingadmissionpolicybindings,clusterkopfpeerings,poddisruptionbudgets"
)


def image_values(image: str, redis_image: str) -> list[str]:
    """The images under test, plus FLOTILLA_E2E_HELM_ARGS (extra helm flags, e.g. to try a chart value)."""
    repository, tag = image.rsplit(":", 1)
    redis_repository, redis_tag = redis_image.rsplit(":", 1)
    return [
        "--set", f"image.repository={repository}", "--set-string", f"image.tag={tag}",
        "--set", f"redis.image.repository={redis_repository}", "--set-string", f"redis.image.tag={redis_tag}",
        *shlex.split(os.environ.get("FLOTILLA_E2E_HELM_ARGS", "")),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def release(kind_cluster: KindCluster, flotilla_image: str, redis_image: str) -> Iterator[KindCluster]:
    """``helm install`` of the chart with the image under test; uninstalled at the end if still there.

    Not ``--wait``: the gateway is Ready only once there is something to serve (a declared model or a healthy
    engine: gateway/app.py /ready), which the tests below create."""
    kind_cluster.helm(
        "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
        *image_values(flotilla_image, redis_image), timeout=120,
    )  # fmt: skip
    yield kind_cluster
    if RELEASE in kind_cluster.helm("list", "-n", NAMESPACE, "-q", check=False).stdout.split():
        kind_cluster.kubectl(
            "delete", "modeldeployments", "--all", "-n", NAMESPACE, "--wait", timeout=180, check=False
        )
        kind_cluster.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", timeout=180, check=False)


def pods(cluster: KindCluster, selector: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) and not pod[
        "metadata"
    ].get("deletionTimestamp")


def rollout(cluster: KindCluster, deployment: str, timeout: int = 240) -> None:
    proc = cluster.kubectl(
        "rollout", "status", f"deployment/{deployment}", "-n", NAMESPACE, f"--timeout={timeout}s",
        timeout=timeout + 20, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        described = cluster.kubectl("describe", "pods", "-n", NAMESPACE, check=False).stdout[-5000:]
        raise AssertionError(f"{deployment} not rolled out: {proc.stderr}\n{described}")


def test_operator_runs_from_the_image_as_non_root(release: KindCluster, flotilla_image: str) -> None:
    rollout(release, "flotilla-operator")
    found = pods(release, "app.kubernetes.io/component=operator")
    assert len(found) == 2
    for pod in found:
        assert ready(pod)
        (status,) = pod["status"]["containerStatuses"]
        assert status["image"].endswith(flotilla_image.rsplit("/", 1)[1]), status["image"]
        assert status["restartCount"] == 0, status
        # the image's non-root user, as the kubelet really ran it
        uid = release.kubectl(
            "exec", "-n", NAMESPACE, pod["metadata"]["name"], "--", "id", "-u"
        ).stdout.strip()
        assert uid == "65532"
    rollout(release, "flotilla-redis")


def test_rbac_as_the_service_accounts_see_it(release: KindCluster) -> None:
    """Asked with each ServiceAccount's own bound token (no admin credentials, no impersonation)."""
    operator_kc = release.token_kubeconfig(NAMESPACE, "flotilla-operator")
    gateway_kc = release.token_kubeconfig(NAMESPACE, "flotilla-gateway")

    def can(kubeconfig: object, verb: str, resource: str, *extra: str) -> str:
        proc = release.kubectl(
            "--kubeconfig", str(kubeconfig), "auth", "can-i", verb, resource, *extra, check=False
        )
        return proc.stdout.strip()

    for verb, resource in (
        ("watch", "modeldeployments.flotilla.dev"),
        ("patch", "modeldeployments.flotilla.dev/status"),
        ("patch", "deployments.apps"),
        ("create", "services"),
        ("create", "events"),
        ("patch", "clusterkopfpeerings.kopf.dev"),
        ("list", "pods"),
    ):
        assert can(operator_kc, verb, resource, "-A") == "yes", (verb, resource)
    for verb, resource in (("delete", "nodes"), ("get", "secrets"), ("create", "pods/exec")):
        assert can(operator_kc, verb, resource, "-A") == "no", (verb, resource)
    assert can(gateway_kc, "watch", "pods", "-n", NAMESPACE) == "yes"
    assert can(gateway_kc, "watch", "modeldeployments.flotilla.dev", "-n", NAMESPACE) == "yes"
    assert can(gateway_kc, "watch", "pods", "-n", "default") == "no"
    assert can(gateway_kc, "patch", "deployments.apps", "-n", NAMESPACE) == "no"
    # and the operator's own token really lists what it watches (not just "can-i")
    release.kubectl("--kubeconfig", str(operator_kc), "get", "modeldeployments", "-A")


def sim_model(name: str, namespace: str, *, replicas: int, **spec: Any) -> dict[str, Any]:
    """A ``spec.engine.type: simulator`` ModelDeployment serving ``SERVED`` (``spec``: further fields)."""
    return {
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "servedModelName": SERVED,
            "replicas": replicas,
            "engine": {"type": "simulator", "maxModelLen": 8192, "simulator": {"startupDelaySeconds": 2}},
            "resources": {"gpus": 0, "cpu": "100m", "memory": "256Mi"},
            **spec,
        },
    }


SIM_MODEL = sim_model(MODEL, NAMESPACE, replicas=2, kvEvents={"enabled": True})


def test_simulated_model_runs_the_operators_engine_pods(release: KindCluster, flotilla_image: str) -> None:
    """``kubectl apply`` of a simulator ModelDeployment: the in-cluster operator's real pod spec (the chart's
    image, ``flotilla sim serve`` + the vLLM arguments it generates) gives Ready pods, and the gateway turns
    Ready once it has the model to serve."""
    release.kubectl("apply", "-f", "-", input=yaml.safe_dump(SIM_MODEL))
    eventually(
        lambda: release.kubectl("get", "deployment", MODEL, "-n", NAMESPACE, check=False).returncode == 0,
        timeout=90, what=f"the operator creating Deployment {MODEL}",
    )  # fmt: skip
    rollout(release, MODEL)
    engines = [p for p in pods(release, f"flotilla.dev/deployment={MODEL}") if ready(p)]
    assert len(engines) == 2, [p["metadata"]["name"] for p in engines]
    (container,) = engines[0]["spec"]["containers"]
    assert container["image"] == flotilla_image
    argv = [*container.get("command", []), *container.get("args", [])]
    assert argv[:3] == ["flotilla", "sim", "serve"], argv
    for flag in ("--model", "--served-model-name", "--port", "--block-size", "--max-model-len"):
        assert flag in argv, (flag, argv)
    # the engine serves on its pod IP, as the gateway and the probes reach it
    ip, port = engines[0]["status"]["podIP"], container["ports"][0]["containerPort"]
    assert ip.startswith("10.244.")
    assert engines[0]["status"]["containerStatuses"][0]["restartCount"] == 0

    def md_ready() -> dict[str, Any] | None:
        md: dict[str, Any] = json.loads(
            release.kubectl("get", "md", MODEL, "-n", NAMESPACE, "-o", "json").stdout
        )
        return md if md.get("status", {}).get("readyReplicas") == 2 else None

    md = eventually(md_ready, timeout=60, what="ModelDeployment status.readyReplicas == 2")
    assert md is not None
    conditions = {c["type"]: c for c in md["status"].get("conditions", [])}
    assert conditions["Available"]["status"] == "True", conditions
    assert conditions.get("Degraded", {}).get("status") != "True", conditions
    # everything the operator makes for a model, made in-cluster with its ServiceAccount's rights
    for kind in ("service", "networkpolicy"):
        release.kubectl("get", kind, MODEL, "-n", NAMESPACE)
    rollout(release, "flotilla-gateway")
    assert port > 0


def client(port: int) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=30)


def test_openai_client_through_the_gateway_service(release: KindCluster) -> None:
    with release.port_forward("service/flotilla-gateway", 80, NAMESPACE) as port:
        c = client(port)
        assert SERVED in [m.id for m in c.models.list().data]
        chat = c.chat.completions.create(
            model=SERVED, messages=[{"role": "user", "content": "Say hello from the cluster."}], max_tokens=8
        )
        assert chat.choices[0].message.content
        assert chat.usage is not None
        assert chat.usage.completion_tokens > 0
        chunks = list(
            c.chat.completions.create(
                model=SERVED, messages=[{"role": "user", "content": "Stream a few words."}], max_tokens=8,
                stream=True,
            )
        )  # fmt: skip
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert len(chunks) > 2
        assert text
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])


def test_engine_pod_killed_mid_load_requests_keep_succeeding(release: KindCluster) -> None:
    """Four clients send requests continuously while (1) one engine container is killed outright (SIGKILL
    through the node's CRI: a crash, the kubelet restarts it) and (2) another engine pod is deleted (SIGTERM,
    then SIGKILL after the grace period; the Deployment replaces it). Every request must succeed, requests keep
    completing after each blow, and two engines are Ready at the end."""
    node = f"{release.name}-control-plane"
    with (
        release.port_forward("service/flotilla-gateway", 80, NAMESPACE) as port,
        client(port) as c,
        ChatLoad(c, SERVED, clients=4, content="worker {n} request {i}", max_tokens=16, join=40) as load,
    ):
        eventually(
            lambda: len(load.done) >= 8, timeout=60, interval=0.2, what="requests flowing before the kills"
        )
        # (1) a crash: the engine container of one pod killed with SIGKILL, no grace
        containers = release.run(
            "docker", "exec", node, "crictl", "ps", "-q", "--name", "^engine$"
        ).stdout.split()
        assert len(containers) == 2, containers
        crashed_at = time.monotonic()
        release.run("docker", "exec", node, "crictl", "stop", "--timeout", "0", containers[0])
        eventually(
            lambda: load.served_since(crashed_at) >= 20,
            timeout=60,
            interval=0.2,
            what="requests after the crash",
        )
        rollout(release, MODEL)
        # (2) a deletion: one engine pod deleted while the load goes on
        victim = pods(release, f"flotilla.dev/deployment={MODEL}")[-1]["metadata"]["name"]
        deleted_at = time.monotonic()
        release.kubectl("delete", "pod", victim, "-n", NAMESPACE, "--wait=false")
        eventually(
            lambda: release.kubectl("get", "pod", victim, "-n", NAMESPACE, check=False).returncode != 0,
            timeout=120, interval=0.5, what=f"pod {victim} gone",
        )  # fmt: skip
        rollout(release, MODEL)
        eventually(
            lambda: load.served_since(deleted_at) >= 20,
            timeout=60,
            interval=0.2,
            what="requests after deletion",
        )
    assert load.failures == [], load.failures[:5]
    assert len([p for p in pods(release, f"flotilla.dev/deployment={MODEL}") if ready(p)]) == 2


def test_helm_upgrade_then_uninstall_leaves_nothing_behind(
    release: KindCluster, flotilla_image: str, redis_image: str
) -> None:
    release.helm(
        "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, *image_values(flotilla_image, redis_image),
        "--set", "gateway.replicas=1", "--wait", "--timeout", "5m", timeout=330,
    )  # fmt: skip

    def one_gateway() -> bool:
        gateways = pods(release, "app.kubernetes.io/component=gateway")
        return len(gateways) == 1 and ready(gateways[0])

    eventually(one_gateway, timeout=120, what="one Ready gateway pod after the upgrade")
    status = json.loads(release.helm("status", RELEASE, "-n", NAMESPACE, "-o", "json").stdout)
    assert status["version"] == 2
    assert status["info"]["status"] == "deployed"
    # one gateway: no shared Redis any more (redis.enabled=auto)
    eventually(
        lambda: pods(release, "app.kubernetes.io/component=redis") == [], timeout=120, what="Redis removed"
    )
    with release.port_forward("service/flotilla-gateway", 80, NAMESPACE) as port:
        assert SERVED in [m.id for m in client(port).models.list().data]

    # as users would: the custom resources first (the operator cleans up after them), then the release
    release.kubectl(
        "delete", "modeldeployments,loraadapters,modelautoscalers", "--all", "-A", "--wait", timeout=180
    )
    release.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "3m", timeout=200)

    def leftovers() -> str:
        of_release = release.kubectl(
            "get", KINDS, "-A", "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name", check=False
        ).stdout
        in_namespace = release.kubectl(
            "get", "deployments,replicasets,pods,services,networkpolicies", "-n", NAMESPACE, "-o", "name"
        ).stdout
        return (of_release + in_namespace).strip()

    eventually(lambda: leftovers() == "", timeout=120, what="nothing of the release left")
