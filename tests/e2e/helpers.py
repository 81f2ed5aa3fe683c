"""Small kubectl-level helpers shared by the e2e tests."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import yaml

from tests.e2e.controlplane import ControlPlane


def md_manifest(name: str, namespace: str, **spec: Any) -> str:
    body = {
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": "meta-llama/Llama-3.1-8B-Instruct", "resources": {"gpus": 0}, **spec},
    }
    return yaml.safe_dump(body)


def get(cluster: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def eventually(check: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"{what} not met after {timeout}s (last: {last!r})")


def conditions(md: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in (md.get("status") or {}).get("conditions") or []}


def diagnose(cluster: ControlPlane, name: str, ns: str) -> str:
    """The ModelDeployment and its Deployment as the API server has them now (for failure messages)."""
    out = []
    for kind in ("md", "deployment"):
        proc = cluster.kubectl("get", kind, name, "-n", ns, "-o", "yaml", check=False)
        out.append(f"--- {kind}/{name} ---\n{proc.stdout or proc.stderr}")
    return "\n".join(out)


def wait_ready(
    cluster: ControlPlane, name: str, ns: str, replicas: int, timeout: float = 90
) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        md = get(cluster, "md", name, ns)
        if not md:
            return None
        st = md.get("status") or {}
        ok = (
            st.get("readyReplicas") == replicas
            and st.get("observedGeneration") == md["metadata"]["generation"]
            and conditions(md).get("Available") == "True"
        )
        return md if ok else None

    md: dict[str, Any] = eventually(ready, timeout, f"md/{name} ready with {replicas} replicas")
    return md


def peering_priorities(cluster: ControlPlane, name: str = "flotilla") -> list[int]:
    """Priorities of the operator replicas registered in the ClusterKopfPeering ``name``."""
    body = json.loads(cluster.kubectl("get", "clusterkopfpeering", name, "-o", "json").stdout)
    return sorted(p["priority"] for p in (body.get("status") or {}).values())
