"""Gateway-overhead mode: zero-latency engines, so what is measured is the router's own cost.

Three measurements per contender, each against the same zero-latency fleet (``--preset zero``):

1. *added latency* — sequential requests (concurrency 1) with a long prompt; p50/p99 e2e minus direct's;
2. *requests/s* — a closed loop at fixed concurrency with 1 output token (median over rounds);
3. *streamed chunks/s* — a closed loop of long streamed answers (median over rounds).

All contenders are started up front and measured in alternating rounds (shuffled order each round, after a
warm-up), because on a shared machine the background load drifts: measuring one contender after another
would attribute that drift to whichever ran during a busy minute.

The router process is pinned to one CPU (the issue's "requests/s on one pinned core") when the machine has
more than one; the load generator and the simulated engines are Python too, so ``direct`` shows the ceiling
of the measuring apparatus itself and every router is reported as a ratio to it.
"""

from __future__ import annotations

import math
import os
import random
import statistics
from dataclasses import dataclass, field, replace

from bench import contenders as contender_registry
from bench.client import run_closed_loop
from bench.contenders import Contender
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


@dataclass
class _Live:
    """A started contender and what has been measured of it so far."""

    contender: Contender
    row: OverheadRow
    latencies: list[float] = field(default_factory=list)
    req_rates: list[float] = field(default_factory=list)
    chunk_rates: list[float] = field(default_factory=list)


async def _start_all(spec: OverheadSpec, fleet: Fleet, *, pin: bool, progress: Progress) -> list[_Live]:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    live: list[_Live] = []
    for name in spec.contenders:
        contender = contender_registry.parse(name)
        row = OverheadRow(name)
        progress.step(f"overhead · {name}", 0)
        reason = contender.unavailable()
        if reason is None:
            try:
                await contender.start(fleet.urls, model=fleet.spec.model, kv_events=[])
            except BenchError as exc:
                reason = f"failed to start: {str(exc).splitlines()[0]}"
        if reason is not None:
            row.skipped = reason
            live.append(_Live(contender, row))
            progress.finish_step(reason)
            continue
        if pin and len(cpus) > 1:
            row.pinned = contender.pin({cpus[0]})
        live.append(_Live(contender, row))
        progress.finish_step("started")
    return live


async def _interleaved(spec: OverheadSpec, fleet: Fleet, live: list[_Live], progress: Progress) -> None:
    """Measure in rounds that alternate between contenders, so machine-load drift hits all of them alike."""
    model = fleet.spec.model
    short = _requests(spec, fleet.spec.seed, 1)
    long = _requests(spec, fleet.spec.seed + 1, spec.stream_tokens)
    running = [x for x in live if not x.row.skipped]
    rng = random.Random(fleet.spec.seed)
    # warm-up: connection pools, tokenizer caches, the routers' trees
    for x in running:
        await run_closed_loop(base_url=x.contender.base_url, requests=short, concurrency=4, duration=60.0,
                              max_requests=24, model=model, headers=x.contender.headers)  # fmt: skip
    per_round = max(1, spec.latency_requests // spec.rounds)
    for r in range(spec.rounds):
        order = running[:]
        rng.shuffle(order)
        progress.message(f"  overhead round {r + 1}/{spec.rounds}")
        for x in order:
            results, _ = await run_closed_loop(
                base_url=x.contender.base_url, requests=short[r * per_round :] or short, concurrency=1,
                duration=600.0, max_requests=per_round, model=model, headers=x.contender.headers,
            )  # fmt: skip
            x.latencies += [res.e2e for res in results if res.ok]
            x.row.errors += sum(1 for res in results if not res.ok)
            results, wall = await run_closed_loop(
                base_url=x.contender.base_url, requests=short, concurrency=spec.throughput_concurrency,
                duration=spec.throughput_seconds / spec.rounds, model=model, headers=x.contender.headers,
            )  # fmt: skip
            x.req_rates.append(sum(1 for res in results if res.ok) / wall)
            x.row.errors += sum(1 for res in results if not res.ok)
            results, wall = await run_closed_loop(
                base_url=x.contender.base_url, requests=long, concurrency=spec.stream_concurrency,
                duration=spec.stream_seconds / spec.rounds, model=model, headers=x.contender.headers,
            )  # fmt: skip
            x.chunk_rates.append(sum(res.chunks for res in results) / wall)
            x.row.errors += sum(1 for res in results if not res.ok)
    for x in running:
        x.row.latency_p50, x.row.latency_p99 = percentile(x.latencies, 50), percentile(x.latencies, 99)
        x.row.req_s = statistics.median(x.req_rates)
        x.row.chunks_s = statistics.median(x.chunk_rates)


async def run_overhead(
    spec: OverheadSpec, routing_fleet: FleetSpec, *, progress: Progress, pin: bool
) -> list[OverheadRow]:
    fleet_spec = replace(
        routing_fleet, engines=spec.engines, preset="zero", num_gpu_blocks=None, kv_events=False
    )
    progress.message(f"overhead mode: starting {spec.engines} zero-latency engines and every contender")
    fleet = await Fleet.start(fleet_spec)
    live: list[_Live] = []
    try:
        live = await _start_all(spec, fleet, pin=pin, progress=progress)
        await _interleaved(spec, fleet, live, progress)
    finally:
        for x in live:
            x.contender.stop()
        fleet.stop()
    rows = [x.row for x in live]
    direct = next((r for r in rows if r.contender == "direct" and not r.skipped), None)
    if direct is not None:
        for row in rows:
            row.added_p50 = row.latency_p50 - direct.latency_p50
            row.added_p99 = row.latency_p99 - direct.latency_p99
    return rows
