"""Run a suite: every workload × every contender on one simulated fleet, cold cache per contender.

Order of one measurement: start the contender → wait until it routes → reset every engine's prefix cache →
scrape the engines' counters → replay the workload open-loop → scrape again → stop the contender. The
workload, its Poisson schedule and the oracle are computed once per workload, so all contenders replay the
identical trace.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from bench import contenders as contender_registry
from bench.arrivals import poisson_schedule
from bench.client import run_open_loop
from bench.fleet import Fleet
from bench.overhead import OverheadRow, run_overhead
from bench.procs import BenchError
from bench.progress import Progress
from bench.results import SLO, RunSummary, skipped_summary, summarise
from bench.suites import Suite
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


async def run_workloads(suite: Suite, fleet: Fleet, result: SuiteResult, progress: Progress) -> None:
    slo = wall_slo(suite)
    for run in suite.runs:
        workload = build(run.workload, seed=suite.fleet.seed, params=run.params)
        info = describe(workload, run.rate, suite)
        result.workloads.append(info)
        offsets = poisson_schedule(len(workload), run.rate, seed=suite.fleet.seed)
        for spec in run.contenders:
            contender = contender_registry.parse(spec)
            progress.step(f"{run.workload} · {spec}", len(workload))
            reason = contender.unavailable()
            if reason is not None:
                result.runs.append(skipped_summary(run.workload, spec, reason))
                progress.finish_step(f"skipped: {reason}")
                continue
            try:
                await contender.start(
                    fleet.urls, model=suite.fleet.model, kv_events=fleet.kv_event_endpoints()
                )
            except BenchError as exc:
                result.runs.append(skipped_summary(run.workload, spec, f"failed to start: {exc}"[:300]))
                progress.finish_step(f"failed to start: {str(exc).splitlines()[0]}")
                continue
            try:
                await fleet.reset_prefix_caches()
                before = await fleet.scrape()
                load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
                results, wall = await run_open_loop(
                    base_url=contender.base_url, requests=workload.requests, offsets=offsets,
                    model=suite.fleet.model, headers=contender.headers, drain_timeout=suite.drain_timeout,
                    on_done=lambda _r: progress.advance(),
                )  # fmt: skip
                after = await fleet.scrape()
            finally:
                contender.stop()
            deltas = [a.minus(b) for a, b in zip(after, before, strict=True)]
            summary = summarise(
                workload=run.workload, contender=spec, results=results, duration=wall, deltas=deltas,
                oracle_hit_rate=info.oracle_hit_rate, slo=slo,
            )  # fmt: skip
            summary.load_avg = load
            result.runs.append(summary)
            progress.finish_step(
                f"ok {summary.ok}/{summary.requests}, TTFT p90 {summary.ttft_p90 * 1000:.0f} ms, "
                f"hit {summary.hit_rate:.0%}"
            )


async def run_suite(suite: Suite, *, command: str, progress: Progress, pin: bool) -> SuiteResult:
    result = SuiteResult(
        suite=suite.name, command=command,
        fleet={"engines": suite.fleet.engines, "preset": suite.fleet.preset, "model": suite.fleet.model,
               "num_gpu_blocks": suite.fleet.num_gpu_blocks, "block_size": suite.fleet.block_size,
               "time_scale": suite.fleet.time_scale, "seed": suite.fleet.seed,
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
    steps = sum(len(run.contenders) for run in suite.runs)
    if suite.overhead is not None:
        steps += len(suite.overhead.contenders)
    return steps
