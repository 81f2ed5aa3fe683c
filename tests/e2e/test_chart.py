"""The Helm chart: lints, installs into the real API server (kwok runs its pods), and its RBAC applies."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.e2e.controlplane import REPO, ControlPlane

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

CHART = REPO / "charts" / "flotilla"
RELEASE, NAMESPACE = "flotilla", "flotilla-system"
#: not "flotilla": the operator fixture's peering object must not collide with the release's
PEERING = "flotilla-chart"


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
    helm(cluster, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
         "--wait", "--timeout", "150s", "--set", f"operator.peeringName={PEERING}")  # fmt: skip
    try:
        deployments = json.loads(cluster.kubectl("get", "deployments", "-n", NAMESPACE, "-o", "json").stdout)
        ready = {d["metadata"]["name"]: d["status"].get("readyReplicas") for d in deployments["items"]}
        assert ready == {"flotilla-operator": 2, "flotilla-gateway": 2}
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
            (gateway_sa, "watch", "pods"),
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
    finally:
        helm(cluster, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "60s")
