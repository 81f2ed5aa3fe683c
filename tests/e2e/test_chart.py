"""The Helm chart: lints, installs into the real API server (kwok runs its pods), and its RBAC applies."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import OperatorProcess
from tests.e2e.controlplane import FLOTILLA, REPO, ControlPlane
from tests.e2e.helpers import eventually, md_manifest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

CHART = REPO / "charts" / "flotilla"
RELEASE, NAMESPACE = "flotilla", "flotilla-system"
#: not "flotilla": the operator fixture's peering object must not collide with the release's
PEERING = "flotilla-chart"
RESTRICTED = (
    "pod-security.kubernetes.io/enforce=restricted",
    "pod-security.kubernetes.io/enforce-version=latest",
)


def helm(cluster: ControlPlane, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(cluster.bin_dir / "helm"), *args], capture_output=True, text=True, env=cluster.env(), timeout=timeout,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_chart_lints(cluster: ControlPlane) -> None:
    helm(cluster, "lint", "--strict", str(CHART))


def test_chart_installs_and_its_rbac_grants_what_the_operator_needs(cluster: ControlPlane) -> None:
    # the API server's Pod Security admission refuses any pod of the chart that is not "restricted"
    cluster.kubectl("create", "namespace", NAMESPACE)
    cluster.kubectl("label", "namespace", NAMESPACE, *RESTRICTED)
    installed = helm(cluster, "install", RELEASE, str(CHART), "--namespace", NAMESPACE,
                     "--wait", "--timeout", "150s", "--set", f"operator.peeringName={PEERING}")  # fmt: skip
    try:
        assert "WARNING: the gateway has NO API KEYS" in installed.stdout  # NOTES.txt
        deployments = json.loads(cluster.kubectl("get", "deployments", "-n", NAMESPACE, "-o", "json").stdout)
        ready = {d["metadata"]["name"]: d["status"].get("readyReplicas") for d in deployments["items"]}
        # two gateways share one Redis (redis.enabled=auto)
        assert ready == {"flotilla-operator": 2, "flotilla-gateway": 2, "flotilla-redis": 1}
        crds = cluster.kubectl("get", "crd", "-o", "name").stdout
        for name in (
            "modeldeployments.flotilla.dev",
            "loraadapters.flotilla.dev",
            "clusterkopfpeerings.kopf.dev",
        ):
            assert name in crds
        assert cluster.kubectl("get", "clusterkopfpeering", PEERING, check=False).returncode == 0

        operator_sa = f"system:serviceaccount:{NAMESPACE}:flotilla-operator"
        gateway_sa = f"system:serviceaccount:{NAMESPACE}:flotilla-gateway"
        allowed = [
            (operator_sa, "patch", "modeldeployments.flotilla.dev/status"),
            (operator_sa, "watch", "modeldeployments.flotilla.dev"),
            (operator_sa, "patch", "deployments.apps"),
            (operator_sa, "create", "events"),
            (operator_sa, "patch", "clusterkopfpeerings.kopf.dev"),
            (operator_sa, "create", "networkpolicies.networking.k8s.io"),
            # the ModelGroup controller: its status, its members' /scale, the profiles ConfigMap
            (operator_sa, "patch", "modelgroups.flotilla.dev/status"),
            (operator_sa, "patch", "modeldeployments.flotilla.dev/scale"),
            (operator_sa, "get", "configmaps"),
        ]
        denied = [
            (operator_sa, "delete", "nodes"),
            (operator_sa, "get", "secrets"),
            (gateway_sa, "patch", "deployments.apps"),
        ]
        for who, verb, resource in allowed:
            assert (
                cluster.kubectl("auth", "can-i", verb, resource, "--as", who, check=False).stdout.strip()
                == "yes"
            )
        for who, verb, resource in denied:
            assert (
                cluster.kubectl("auth", "can-i", verb, resource, "--as", who, check=False).stdout.strip()
                == "no"
            )
        # the gateway discovers in its own namespace only (a pod elsewhere with engine labels gets no prompts)
        # (and reads the ModelGroups' plans there: size-aware routing; it never writes them)
        for namespace, answer in ((NAMESPACE, "yes"), ("default", "no")):
            for verb, resource in (("watch", "pods"), ("watch", "modelgroups.flotilla.dev")):
                can = cluster.kubectl(
                    "auth", "can-i", verb, resource, "-n", namespace, "--as", gateway_sa, check=False
                )
                assert can.stdout.strip() == answer, (namespace, resource)
        patch = cluster.kubectl("auth", "can-i", "patch", "modelgroups.flotilla.dev/status", "-n", NAMESPACE,
                                "--as", gateway_sa, check=False)  # fmt: skip
        assert patch.stdout.strip() == "no"
        _engine_pod_template_policy(cluster)
        _upgrade_to_one_gateway_drops_redis(cluster)
    finally:
        helm(cluster, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "60s")
        left = cluster.kubectl(
            "get", "deployments,services,networkpolicies,serviceaccounts,roles,rolebindings,configmaps",
            "-n", NAMESPACE, "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name",
        ).stdout  # fmt: skip
        cluster_left = cluster.kubectl(
            "get", "clusterroles,clusterrolebindings,validatingadmissionpolicies", "-o", "name",
            "-l", f"app.kubernetes.io/instance={RELEASE}",
        ).stdout  # fmt: skip
        cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
    assert left.strip() == "", left  # helm uninstall leaves nothing of the release behind
    assert cluster_left.strip() == "", cluster_left


def _upgrade_to_one_gateway_drops_redis(cluster: ControlPlane) -> None:
    helm(cluster, "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "--reuse-values",
         "--set", "gateway.replicas=1", "--wait", "--timeout", "120s")  # fmt: skip
    deployments = json.loads(cluster.kubectl("get", "deployments", "-n", NAMESPACE, "-o", "json").stdout)
    names = {d["metadata"]["name"] for d in deployments["items"]}
    assert names == {"flotilla-operator", "flotilla-gateway"}
    assert (
        cluster.kubectl("get", "networkpolicy", "flotilla-redis", "-n", NAMESPACE, check=False).returncode
        != 0
    )
    gateway = next(d for d in deployments["items"] if d["metadata"]["name"] == "flotilla-gateway")
    args = gateway["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [a for a in args if a.startswith("--redis-url")]


@pytest.mark.timeout(480)
def test_namespaced_install_grants_the_operator_only_its_namespaces(
    cluster: ControlPlane, tmp_path: Path, operator: OperatorProcess
) -> None:
    release, namespace, watched = "flotilla-ns", "flotilla-ns-system", "chart-models"
    for ns in (namespace, watched):
        cluster.kubectl("create", "namespace", ns)
        cluster.kubectl("label", "namespace", ns, *RESTRICTED)
    helm(cluster, "install", release, str(CHART), "--namespace", namespace, "--wait", "--timeout", "150s",
         "--set", "operator.peeringName=flotilla-ns-chart", "--set", f"operator.namespaces={{{watched}}}",
         "--set", "gateway.replicas=1", "--set", "operator.replicas=1")  # fmt: skip
    try:
        operator_sa = f"system:serviceaccount:{namespace}:{release}-operator"
        gateway_sa = f"system:serviceaccount:{namespace}:{release}-gateway"
        expected = [
            (operator_sa, "patch", "deployments.apps", watched, "yes"),
            (operator_sa, "patch", "modeldeployments.flotilla.dev/status", watched, "yes"),
            (operator_sa, "create", "networkpolicies.networking.k8s.io", watched, "yes"),
            (operator_sa, "patch", "deployments.apps", "default", "no"),
            (operator_sa, "list", "modeldeployments.flotilla.dev", "default", "no"),
            (operator_sa, "watch", "pods", namespace, "yes"),  # the autoscaler finds the gateways
            (operator_sa, "patch", "deployments.apps", namespace, "no"),
            (operator_sa, "patch", "clusterkopfpeerings.kopf.dev", "", "yes"),
            (gateway_sa, "watch", "pods", watched, "yes"),  # the gateway follows the one watched namespace
            (gateway_sa, "watch", "pods", namespace, "no"),
        ]
        for who, verb, resource, ns, answer in expected:
            where = ["-n", ns] if ns else []
            got = cluster.kubectl(
                "auth", "can-i", verb, resource, *where, "--as", who, check=False
            ).stdout.strip()
            assert got == answer, (who, verb, resource, ns)
        assert "flotilla-ns-redis" not in cluster.kubectl("get", "deployments", "-n", namespace).stdout
        _operator_works_with_its_service_account(cluster, tmp_path, release, namespace, watched)
        # the session's admin operator would realise the model itself (and clear the condition): paused
        operator.stop()
        try:
            _a_missing_verb_is_reported_and_healed_by_granting_it(
                cluster, tmp_path, release, namespace, watched
            )
        finally:
            operator.start()
    finally:
        helm(cluster, "uninstall", release, "--namespace", namespace, "--wait", "--timeout", "60s")
        for ns in (namespace, watched):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _engine_pod_template_policy(cluster: ControlPlane) -> None:
    """The chart's admission policy refuses a privileged engine pod template, except where admins allow it."""
    ns = "chart-podtemplate"
    cluster.kubectl("create", "namespace", ns)
    try:

        def md(name: str, pod_spec: dict[str, object]) -> str:
            return json.dumps({
                "apiVersion": "flotilla.dev/v1alpha1", "kind": "ModelDeployment",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"model": "org/m", "replicas": 0, "resources": {"gpus": 0}, "podTemplate": {"spec": pod_spec}},
            })  # fmt: skip

        privileged = {"containers": [{"name": "engine", "securityContext": {"privileged": True}}]}
        refused = [
            ({"hostNetwork": True}, "hostNetwork"),
            ({"serviceAccountName": "admin"}, "ServiceAccount"),
            ({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}, "hostPath"),
            (privileged, "privileged"),
        ]
        for pod_spec, words in refused:
            out = cluster.kubectl("apply", "-f", "-", input=md("bad", pod_spec), check=False)
            assert out.returncode != 0, pod_spec
            assert words in out.stderr, out.stderr
        ok = {
            "containers": [{"name": "engine", "securityContext": {"runAsNonRoot": True}}],
            "priorityClassName": "x",
        }
        assert cluster.kubectl("apply", "-f", "-", input=md("fine", ok), check=False).returncode == 0
        # the documented escape hatch: a namespace an admin labelled
        cluster.kubectl("label", "namespace", ns, "flotilla.dev/allow-privileged-engines=true")

        def admitted() -> bool:
            return (
                cluster.kubectl("apply", "-f", "-", input=md("trusted", privileged), check=False).returncode
                == 0
            )

        eventually(admitted, 30, "privileged template admitted in the labelled namespace")
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@contextlib.contextmanager
def _service_account_operator(
    cluster: ControlPlane, tmp_path: Path, release: str, namespace: str, watched: str, priority: int
) -> Iterator[Path]:
    """A real ``flotilla operator`` with the chart's ServiceAccount token (not admin) and the chart's arguments,
    running while the block runs; yields its log file."""
    token = cluster.kubectl("create", "token", f"{release}-operator", "-n", namespace).stdout.strip()
    kubeconfig = tmp_path / f"operator-sa-{priority}.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": {"server": cluster.server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}],
    }))  # fmt: skip
    log = tmp_path / f"operator-sa-{priority}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [FLOTILLA, "operator", "--kubeconfig", str(kubeconfig), f"--namespace={watched}",
             f"--gateway-namespace={namespace}", "--peering=flotilla-ns-chart", f"--priority={priority}",
             "--simulator-image=flotilla:e2e"],
            stdout=out, stderr=subprocess.STDOUT, env=cluster.env(),
        )  # fmt: skip
    try:
        yield log
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _operator_works_with_its_service_account(
    cluster: ControlPlane, tmp_path: Path, release: str, namespace: str, watched: str
) -> None:
    """The chart's ServiceAccount operator reconciles a simulated model in its one namespace: the Roles hold
    every verb it uses."""
    with _service_account_operator(cluster, tmp_path, release, namespace, watched, 7) as log:
        cluster.kubectl("apply", "-f", "-", input=md_manifest(
            "sa-sim", watched, replicas=1, engine={"type": "simulator"}, kvEvents={"enabled": True},
        ))  # fmt: skip

        def reconciled() -> bool:
            return "Handler 'reconcile' succeeded" in log.read_text(errors="replace")

        eventually(reconciled, 90, "the ServiceAccount's operator reconciled the model")
        dep = json.loads(cluster.kubectl("get", "deployment", "sa-sim", "-n", watched, "-o", "json").stdout)
        assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "flotilla:e2e"
        assert cluster.kubectl("get", "networkpolicy", "sa-sim", "-n", watched, check=False).returncode == 0
        text = log.read_text(errors="replace")
        assert "403" not in text, text[-3000:]
        assert "Forbidden" not in text, text[-3000:]


def _a_missing_verb_is_reported_and_healed_by_granting_it(
    cluster: ControlPlane, tmp_path: Path, release: str, namespace: str, watched: str
) -> None:
    """Without ``create`` on NetworkPolicies the model is Degraded/Forbidden with a Warning event, even once its
    engine pods are Ready (the Deployment watcher must not clear it); granting the verb heals it on a retry."""
    roles = json.loads(cluster.kubectl("get", "roles", "-n", watched, "-o", "json").stdout)["items"]
    originals = [
        r for r in roles if any("networkpolicies" in (rule.get("resources") or []) for rule in r["rules"])
    ]
    assert originals, "no Role grants networkpolicies in the watched namespace"
    for role in originals:
        rules = []
        for rule in role["rules"]:
            if "networkpolicies" in (rule.get("resources") or []):
                others = [x for x in rule["resources"] if x != "networkpolicies"]
                if others:
                    rules.append({**rule, "resources": others})
                rules.append({**rule, "resources": ["networkpolicies"],
                              "verbs": [v for v in rule["verbs"] if v != "create"]})  # fmt: skip
            else:
                rules.append(rule)
        cut = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": role["metadata"]["name"], "namespace": watched}, "rules": rules}  # fmt: skip
        cluster.kubectl("apply", "-f", "-", input=json.dumps(cut))
    with _service_account_operator(cluster, tmp_path, release, namespace, watched, 8):
        cluster.kubectl("apply", "-f", "-", input=md_manifest(
            "sa-forbidden", watched, replicas=1, engine={"type": "simulator"},
        ))  # fmt: skip

        def conditions() -> dict[str, dict[str, Any]]:
            md = json.loads(cluster.kubectl("get", "md", "sa-forbidden", "-n", watched, "-o", "json").stdout)
            status = md.get("status") or {}
            conds = {c["type"]: c for c in status.get("conditions") or []}
            return conds if status.get("readyReplicas") == 1 else {}

        def forbidden() -> bool:
            degraded = conditions().get("Degraded") or {}
            return degraded.get("status") == "True" and degraded.get("reason") == "Forbidden"

        eventually(forbidden, 90, "Degraded/Forbidden with the engine pod Ready")
        time.sleep(3)  # the Deployment watcher has mirrored the Ready pod meanwhile: still Degraded
        assert forbidden(), conditions()
        events = cluster.kubectl("get", "events", "-n", watched, "--field-selector",
                                 "involvedObject.name=sa-forbidden,reason=Forbidden", "-o", "name").stdout  # fmt: skip
        assert events.strip(), "no Forbidden event"
        for role in originals:  # grant the verb back: the 30 s retry heals it without a spec change
            restored = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                        "metadata": {"name": role["metadata"]["name"], "namespace": watched},
                        "rules": role["rules"]}  # fmt: skip
            cluster.kubectl("apply", "-f", "-", input=json.dumps(restored))

        def healed() -> bool:
            degraded = conditions().get("Degraded") or {}
            return degraded.get("status") == "False"

        eventually(healed, 75, "Degraded cleared once the verb is granted")
        assert (
            cluster.kubectl("get", "networkpolicy", "sa-forbidden", "-n", watched, check=False).returncode
            == 0
        )
