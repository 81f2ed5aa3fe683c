"""Gateway-overhead mode: zero-latency engines, so what is measured is the router's own cost.

Three measurements per contender, each against the same zero-latency fleet (``--preset zero``):

1. *added latency* — sequential requests (concurrency 1) with a long prompt; p50/p99 e2e minus direct's;
2. *requests/s* — a closed loop at fixed concurrency with 1 output token;
3. *streamed chunks/s* — a closed loop of long streamed answers.

The router process is pinned to one CPU (the issue's "requests/s on one pinned core") when the machine has
more than one; the load generator and the simulated engines are Python too, so ``direct`` shows the ceiling
of the measuring apparatus itself and every router is reported as a ratio to it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

from bench import contenders as contender_registry
from bench.client import run_closed_loop
from bench.fleet import Fleet, FleetSpec
from bench.procs import BenchError
from bench.progress import Progress
from bench.results import percentile
from bench.suites import OverheadSpec
from bench.workloads import BenchRequest, gsp


@dataclass
class OverheadRow:
    contender: str
    latency_p50: float = math.nan
    latency_p99: float = math.nan
    added_p50: float = math.nan  # vs direct
    added_p99: float = math.nan
    req_s: float = math.nan
    chunks_s: float = math.nan
    errors: int = 0
    pinned: bool = False
    skipped: str = ""


def _requests(spec: OverheadSpec, seed: int, output: int) -> tuple[BenchRequest, ...]:
    workload = gsp(
        seed=seed,
        groups=8,
        prompts_per_group=16,
        system_len=spec.prompt_tokens,
        question_len=32,
        output_len=output,
    )
    return workload.requests


async def measure(spec: OverheadSpec, fleet: Fleet, name: str, *, pin: bool) -> OverheadRow:
    contender = contender_registry.parse(name)
    row = OverheadRow(name)
    reason = contender.unavailable()
    if reason is not None:
        row.skipped = reason
        return row
    try:
        await contender.start(fleet.urls, model=fleet.spec.model, kv_events=[])
    except BenchError as exc:
        row.skipped = f"failed to start: {str(exc).splitlines()[0]}"
        return row
    try:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if pin and len(cpus) > 1:
            row.pinned = contender.pin({cpus[0]})
        model = fleet.spec.model
        short = _requests(spec, fleet.spec.seed, 1)
        results, _ = await run_closed_loop(
            base_url=contender.base_url, requests=short, concurrency=1, duration=600.0,
            max_requests=spec.latency_requests, model=model, headers=contender.headers,
        )  # fmt: skip
        ok = [r.e2e for r in results if r.ok]
        row.errors += len(results) - len(ok)
        row.latency_p50, row.latency_p99 = percentile(ok, 50), percentile(ok, 99)
        results, wall = await run_closed_loop(
            base_url=contender.base_url, requests=short, concurrency=spec.throughput_concurrency,
            duration=spec.throughput_seconds, model=model, headers=contender.headers,
        )  # fmt: skip
        row.errors += sum(1 for r in results if not r.ok)
        row.req_s = sum(1 for r in results if r.ok) / wall
        long = _requests(spec, fleet.spec.seed + 1, spec.stream_tokens)
        results, wall = await run_closed_loop(
            base_url=contender.base_url, requests=long, concurrency=spec.stream_concurrency,
            duration=spec.stream_seconds, model=model, headers=contender.headers,
        )  # fmt: skip
        row.errors += sum(1 for r in results if not r.ok)
        row.chunks_s = sum(r.chunks for r in results) / wall
    finally:
        contender.stop()
    return row


async def run_overhead(
    spec: OverheadSpec, routing_fleet: FleetSpec, *, progress: Progress, pin: bool
) -> list[OverheadRow]:
    fleet_spec = replace(
        routing_fleet, engines=spec.engines, preset="zero", num_gpu_blocks=None, kv_events=False
    )
    progress.message(f"overhead mode: starting {spec.engines} zero-latency engines")
    fleet = await Fleet.start(fleet_spec)
    rows: list[OverheadRow] = []
    try:
        for name in spec.contenders:
            progress.step(f"overhead · {name}", spec.latency_requests)
            row = await measure(spec, fleet, name, pin=pin)
            rows.append(row)
            progress.finish_step(row.skipped or f"p50 {row.latency_p50 * 1000:.2f} ms, {row.req_s:.0f} req/s")
    finally:
        fleet.stop()
    direct = next((r for r in rows if r.contender == "direct" and not r.skipped), None)
    if direct is not None:
        for row in rows:
            row.added_p50 = row.latency_p50 - direct.latency_p50
            row.added_p99 = row.latency_p99 - direct.latency_p99
    return rows
