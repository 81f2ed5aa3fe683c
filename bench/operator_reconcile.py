"""How fast the operator reconciles N ModelDeployments, and what it costs when idle, on the real control plane.

    python -m bench.operator_reconcile --count 500

One run, on one freshly started loopback control plane (bench/harness/controlplane.py), two paths side by side:

1. **direct** (the floor): the same N Deployments + N Services the builders produce are POSTed straight to
   the API server, as fast as the operator path's client; measured until every Deployment is Available.
   It runs first, so the operator path (second) faces the larger cluster — the comparison never flatters it.
2. **operator**: N ModelDeployments are POSTed; measured until every MD reports ``observedGeneration``
   (Deployment + Service applied and status written: *reconciled*), and until every MD is ``Available``.

Then the operator's own CPU is sampled from /proc while it sits idle (watching 3N objects), and it is restarted
to measure how long resuming N objects takes and that it rewrites none of them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.harness.controlplane import FLOTILLA, REPO, TOKEN, ControlPlane, binaries
from bench.harness.localhost import install_loopback_guard
from flotilla.crds import ModelDeploymentSpec
from flotilla_operator import builders, peering

CONCURRENCY = 16
TICK = os.sysconf("SC_CLK_TCK")


def md_body(name: str, namespace: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": "meta-llama/Llama-3.1-8B-Instruct", "replicas": replicas, "resources": {"gpus": 0}},
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


@dataclass
class Run:
    count: int
    replicas: int
    results: dict[str, float] = field(default_factory=dict)


async def post_all(client: httpx.AsyncClient, items: list[tuple[str, dict[str, Any]]]) -> None:
    queue = list(items)

    async def worker() -> None:
        while queue:
            path, body = queue.pop()
            response = await client.post(path, json=body)
            if response.status_code >= 300:
                raise RuntimeError(f"POST {path}: {response.status_code} {response.text[:300]}")

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def wait_all(
    client: httpx.AsyncClient, path: str, done: Callable[[dict[str, Any]], bool], count: int, limit_s: float
) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        items = (await client.get(path)).json()["items"]
        if sum(1 for item in items if done(item)) >= count:
            return time.monotonic()
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{path}: not all {count} done after {limit_s}s")


def available(obj: dict[str, Any]) -> bool:
    conds = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Available" and c.get("status") == "True" for c in conds)


def reconciled(md: dict[str, Any]) -> bool:
    return bool((md.get("status") or {}).get("observedGeneration") == md["metadata"]["generation"])


async def direct_path(client: httpx.AsyncClient, run: Run, ns: str) -> None:
    spec = ModelDeploymentSpec.model_validate(md_body("x", ns, run.replicas)["spec"])
    items: list[tuple[str, dict[str, Any]]] = []
    for i in range(run.count):
        name = f"direct-{i}"
        for manifest in (
            builders.deployment(name, ns, "none", spec),
            builders.service(name, ns, "none", spec),
        ):
            manifest["metadata"].pop("ownerReferences")
            plural = "deployments" if manifest["kind"] == "Deployment" else "services"
            prefix = "/apis/apps/v1" if plural == "deployments" else "/api/v1"
            items.append((f"{prefix}/namespaces/{ns}/{plural}", manifest))
    start = time.monotonic()
    await post_all(client, items)
    run.results["direct: objects created (s)"] = time.monotonic() - start
    end = await wait_all(client, f"/apis/apps/v1/namespaces/{ns}/deployments", available, run.count, 600)
    run.results["direct: all Deployments Available (s)"] = end - start


async def operator_path(client: httpx.AsyncClient, run: Run, ns: str, pid: int) -> None:
    items = [
        (
            f"/apis/flotilla.dev/v1alpha1/namespaces/{ns}/modeldeployments",
            md_body(f"md-{i}", ns, run.replicas),
        )
        for i in range(run.count)
    ]
    cpu0, start = cpu_seconds(pid), time.monotonic()
    await post_all(client, items)
    run.results["operator: MDs created (s)"] = time.monotonic() - start
    path = f"/apis/flotilla.dev/v1alpha1/namespaces/{ns}/modeldeployments"
    end = await wait_all(client, path, reconciled, run.count, 600)
    run.results["operator: all MDs reconciled (s)"] = end - start
    end = await wait_all(client, path, available, run.count, 600)
    run.results["operator: all MDs Available (s)"] = end - start
    run.results["operator: CPU used until Available (s)"] = cpu_seconds(pid) - cpu0


def start_operator(cluster: ControlPlane, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [FLOTILLA, "operator", "--kubeconfig", str(cluster.kubeconfig), "--standalone"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=cluster.env(),
        )
    deadline = time.monotonic() + 60
    while "Activity 'login' succeeded" not in log.read_text(errors="replace"):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"operator did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


async def versions(client: httpx.AsyncClient, ns: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in (f"/apis/apps/v1/namespaces/{ns}/deployments", f"/api/v1/namespaces/{ns}/services",
                 f"/apis/flotilla.dev/v1alpha1/namespaces/{ns}/modeldeployments"):  # fmt: skip
        for item in (await client.get(path)).json()["items"]:
            out[f"{path}/{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
    return out


async def main_async(run: Run, idle_seconds: float, workdir: Path) -> None:
    cluster = ControlPlane(bin_dir=binaries())
    cluster.start()
    try:
        cluster.kubectl("apply", "-f", str(REPO / "charts" / "flotilla" / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s", timeout=70)
        cluster.kubectl("apply", "-f", "-", input=json.dumps(peering.peering_object("flotilla")))
        for ns in ("bench-direct", "bench-md"):
            cluster.kubectl("create", "namespace", ns)
        cluster.kubectl("wait", "--for=jsonpath={.metadata.name}=default", "sa/default", "-n", "bench-md",
                        "--timeout=60s", timeout=70)  # fmt: skip
        limits = httpx.Limits(max_connections=CONCURRENCY * 2)
        async with httpx.AsyncClient(
            base_url=cluster.server, headers={"Authorization": f"Bearer {TOKEN}"}, verify=False, timeout=60,
            limits=limits,
        ) as client:  # fmt: skip
            await direct_path(client, run, "bench-direct")
            log = workdir / "operator.log"
            proc = start_operator(cluster, log)
            try:
                await operator_path(client, run, "bench-md", proc.pid)
                await asyncio.sleep(5)  # let the last status updates settle
                cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
                await asyncio.sleep(idle_seconds)
                run.results["operator: idle CPU (% of one core)"] = (
                    100 * (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
                )
                before = await versions(client, "bench-md")
            finally:
                stop(proc)
            resumed_mark = len(log.read_text(errors="replace"))
            start = time.monotonic()
            proc = start_operator(cluster, log)
            try:
                while (
                    log.read_text(errors="replace")[resumed_mark:].count("Resuming is processed") < run.count
                ):
                    if time.monotonic() - start > 300:
                        raise TimeoutError("resume did not finish")
                    await asyncio.sleep(0.5)
                run.results["operator: restart, all N resumed (s)"] = time.monotonic() - start
                await asyncio.sleep(3)
                after = await versions(client, "bench-md")
                run.results["operator: objects rewritten by the restart"] = sum(
                    1 for k, v in before.items() if after.get(k) != v
                )
            finally:
                stop(proc)
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=500, help="ModelDeployments (and direct Deployments)")
    parser.add_argument("--replicas", type=int, default=1, help="Engine pods per ModelDeployment")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="Idle CPU sampling window")
    parser.add_argument("--workdir", type=Path, default=Path("bench-results/operator"))
    args = parser.parse_args()
    install_loopback_guard()
    args.workdir.mkdir(parents=True, exist_ok=True)
    run = Run(count=args.count, replicas=args.replicas)
    started = time.monotonic()
    asyncio.run(main_async(run, args.idle_seconds, args.workdir))
    print(
        f"# operator_reconcile count={run.count} replicas={run.replicas} wall={time.monotonic() - started:.0f}s"
    )
    for key, value in run.results.items():
        print(f"| {key} | {value:.2f} |")
    direct = run.results["direct: all Deployments Available (s)"]
    print(
        f"| operator path ÷ direct path (time to all Available) | {run.results['operator: all MDs Available (s)'] / direct:.2f} |"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
