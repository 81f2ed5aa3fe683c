"""Run a suite: every workload × every contender on one simulated fleet, cold cache per contender.

Order of one measurement: start the contender → wait until it routes → reset every engine's prefix cache →
scrape the engines' counters → replay the trace (open-loop Poisson, or closed-loop sessions with think time)
→ scrape again → stop the contender. Seeds are the outer loop and the contenders run in a seeded shuffled
order per seed and workload, so each contender is measured once per seed, interleaved in time with the others
while the shared machine's load drifts. Within a seed every contender replays the identical trace.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field, replace
from typing import Any

from bench import contenders as contender_registry
from bench.arrivals import poisson_schedule
from bench.client import run_open_loop
from bench.contenders import Contender
from bench.fleet import Fleet
from bench.overhead import OverheadRow, run_overhead
from bench.procs import BenchError
from bench.progress import Progress
from bench.results import SLO, RequestResult, RunSummary, skipped_summary, summarise
from bench.sessions import group_sessions, run_sessions, think_times
from bench.suites import Suite, WorkloadRun
from bench.workloads import Workload, build, prompt_ids
from kvcache.oracle import infinite_cache_hits


@dataclass
class WorkloadInfo:
    name: str
    description: str
    requests: int
    rate: float
    prompt_tokens: int
    working_set_tokens: int
    working_set_vs_engine: float  # ÷ one engine's KV tokens
    working_set_vs_cluster: float  # ÷ the cluster's KV tokens
    oracle_hit_rate: float
    #: one LRU cache as large as the whole cluster's KV (engines × blocks): reachable given the memory
    bounded_oracle_hit_rate: float = math.nan


@dataclass
class SuiteResult:
    suite: str
    command: str
    fleet: dict[str, Any]
    workloads: list[WorkloadInfo] = field(default_factory=list)
    runs: list[RunSummary] = field(default_factory=list)
    overhead: list[OverheadRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    warmup: float = 0.0


def oracle_hit_rates(
    prompts: list[list[int]], block_size: int, capacity_blocks: int | None
) -> tuple[float, float]:
    """The infinite-cache oracle (upper bound) and, given the cluster's KV blocks, the capacity-bounded LRU one."""
    infinite = infinite_cache_hits(prompts, block_size=block_size).hit_rate
    if capacity_blocks is None:
        return infinite, math.nan
    return infinite, infinite_cache_hits(prompts, block_size=block_size, capacity=capacity_blocks).hit_rate


def describe(workload: Workload, rate: float, suite: Suite) -> WorkloadInfo:
    prompts = prompt_ids(workload)
    blocks = suite.fleet.num_gpu_blocks
    hit, bounded = oracle_hit_rates(
        prompts, suite.fleet.block_size, blocks * suite.fleet.engines if blocks is not None else None
    )
    per_engine = suite.fleet.kv_tokens_per_engine
    ws = workload.working_set_tokens
    return WorkloadInfo(
        name=workload.name,
        description=workload.description,
        requests=len(workload),
        rate=rate,
        prompt_tokens=sum(len(p) for p in prompts),
        working_set_tokens=ws,
        working_set_vs_engine=ws / per_engine if per_engine else math.nan,
        working_set_vs_cluster=ws / (per_engine * suite.fleet.engines) if per_engine else math.nan,
        oracle_hit_rate=hit,
        bounded_oracle_hit_rate=bounded,
    )


def wall_slo(suite: Suite) -> SLO:
    """The SLO is stated in simulated time; with a time scale the client measures wall time."""
    scale = suite.fleet.time_scale
    return SLO(ttft=suite.slo.ttft * scale, itl=suite.slo.itl * scale)


def contender_order(contenders: tuple[str, ...], *, seed: int, workload: str) -> list[str]:
    """The contenders in a seeded shuffled order, different per seed and workload, so no contender always runs
    first (cold machine) or last (after the others heated it up) while the shared machine's load drifts."""
    order = list(contenders)
    random.Random(f"{seed}/{workload}").shuffle(order)
    return order


async def replay(
    run: WorkloadRun, workload: Workload, contender: Contender, suite: Suite, seed: int, progress: Progress
) -> tuple[list[RequestResult], float]:
    """One trace against one started contender: open-loop Poisson, or closed-loop sessions with think time."""
    if not run.closed_loop:
        offsets = poisson_schedule(len(workload), run.rate, seed=seed)
        return await run_open_loop(
            base_url=contender.base_url, requests=workload.requests, offsets=offsets, model=suite.fleet.model,
            headers=contender.headers, drain_timeout=suite.drain_timeout, on_done=lambda _r: progress.advance(),
        )  # fmt: skip
    groups = group_sessions(workload.requests)
    starts = poisson_schedule(len(groups), run.rate, seed=seed)
    think = think_times(groups, run.think, seed=seed)
    longest = max(len(g) for g in groups)
    deadline = starts[-1] + longest * (run.think * 3 + 2.0) + suite.drain_timeout
    return await run_sessions(
        base_url=contender.base_url, sessions=groups, starts=starts, think=think, model=suite.fleet.model,
        deadline=deadline, headers=contender.headers, on_done=lambda _r: progress.advance(),
    )  # fmt: skip


async def run_workloads(suite: Suite, fleet: Fleet, result: SuiteResult, progress: Progress) -> None:
    """Seeds outermost, so every contender is measured once per seed, interleaved in time with the others."""
    for seed in suite.seeds:
        for run in suite.runs:
            workload = build(run.workload, seed=seed, params=run.params)
            info = describe(workload, run.rate, suite)
            if not any(w.name == info.name for w in result.workloads):
                result.workloads.append(info)  # the first seed's; each run keeps its own seed's oracle
            for spec in contender_order(run.contenders, seed=seed, workload=run.workload):
                result.runs.append(await measure(run, workload, info, spec, suite, fleet, seed, progress))


async def measure(
    run: WorkloadRun, workload: Workload, info: WorkloadInfo, spec: str, suite: Suite, fleet: Fleet, seed: int,
    progress: Progress,
) -> RunSummary:  # fmt: skip
    """Start the contender, reset the engines' caches, replay the trace, scrape the engines, stop it."""
    slo = wall_slo(suite)
    warmup = math.floor(len(workload) * suite.warmup)
    contender = contender_registry.parse(spec)
    progress.step(f"seed {seed} · {run.workload} · {spec}", len(workload))
    reason = contender.unavailable()
    if reason is not None:
        progress.finish_step(f"skipped: {reason}")
        return replace(skipped_summary(run.workload, spec, reason), seed=seed)
    try:
        await contender.start(fleet.urls, model=suite.fleet.model, kv_events=fleet.kv_event_endpoints())
    except BenchError as exc:
        progress.finish_step(f"failed to start: {str(exc).splitlines()[0]}")
        return replace(skipped_summary(run.workload, spec, f"failed to start: {exc}"[:300]), seed=seed)
    try:
        await fleet.reset_prefix_caches()
        before = await fleet.scrape()
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
        results, wall = await replay(run, workload, contender, suite, seed, progress)
        after = await fleet.scrape()
    finally:
        contender.stop()
    deltas = [a.minus(b) for a, b in zip(after, before, strict=True)]
    summary = summarise(
        workload=run.workload, contender=spec, results=results, duration=wall, deltas=deltas,
        oracle_hit_rate=info.oracle_hit_rate, slo=slo, warmup=warmup, seed=seed,
    )  # fmt: skip
    summary.load_avg = load
    progress.finish_step(
        f"ok {summary.ok}/{summary.requests}, TTFT p90 {summary.ttft_p90 * 1000:.0f} ms, "
        f"hit {summary.hit_rate:.0%}"
    )
    return summary


async def run_suite(suite: Suite, *, command: str, progress: Progress, pin: bool) -> SuiteResult:
    result = SuiteResult(
        suite=suite.name, command=command, seeds=list(suite.seeds), warmup=suite.warmup,
        fleet={"engines": suite.fleet.engines, "preset": suite.fleet.preset, "model": suite.fleet.model,
               "num_gpu_blocks": suite.fleet.num_gpu_blocks, "block_size": suite.fleet.block_size,
               "time_scale": suite.fleet.time_scale, "seed": suite.fleet.seed,
               "processes": len(suite.fleet.split()),
               "slo_ttft": suite.slo.ttft, "slo_itl": suite.slo.itl, "cpus": os.cpu_count() or 0},
    )  # fmt: skip
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    if suite.runs:
        progress.message(f"starting {suite.fleet.engines} simulated engines ({suite.fleet.preset})")
        fleet = await Fleet.start(suite.fleet)
        try:
            await run_workloads(suite, fleet, result, progress)
        finally:
            fleet.stop()
    if suite.overhead is not None:
        result.overhead = await run_overhead(suite.overhead, suite.fleet, progress=progress, pin=pin)
    if load_before is not None:
        load_after = os.getloadavg()
        result.notes.append(
            f"machine load average (1 min) {load_before[0]:.1f} at the start and {load_after[0]:.1f} at the end, "
            f"on {os.cpu_count()} CPUs: other work shared the machine, so absolute latencies are noisy; compare "
            "contenders by ratio"
        )
    return result


def count_steps(suite: Suite) -> int:
    steps = sum(len(run.contenders) for run in suite.runs) * len(suite.seeds)
    if suite.overhead is not None:
        steps += len(suite.overhead.contenders)
    return steps
