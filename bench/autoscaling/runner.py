"""Run the autoscaling suite: calibrate one engine's capacity, then every trace × seed × contender.

The suite's settings, contenders and results are shared by both clocks; in virtual time (the default) the runs
are :mod:`bench.autoscaling.virtual_run`'s. On the wall clock, one run: start the system under test (:mod:`bench.autoscaling.sut`) with the engines the trace's first second
needs already warm → write the trace's start time → replay the arrivals open-loop → stop it (it writes its
record) → compute GPU-seconds, SLO attainment per minute and step-to-ready on the trace's clock. Contenders
run in a shuffled order per (trace, seed), so drift in the machine's background load is not pinned on one.
The oracle's GPU-seconds are computed, and its schedule is also replayed as a contender to show it really
meets the SLO with the measured capacity.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.arrivals import poisson_schedule
from bench.autoscaling import metrics, oracle
from bench.autoscaling.load import replay
from bench.autoscaling.spec import (
    AutoscaleResult,
    AutoscaleSuite,
    Calibration,
    RunRecord,
    calibration_from,
    calibration_point,
    policy_spec,
)
from bench.autoscaling.traces import arrivals
from bench.autoscaling.virtual_run import calibrate_virtual, run_one_virtual
from bench.procs import Proc, free_port, wait_http
from bench.progress import Progress


def _spec(
    suite: AutoscaleSuite, trace: str, contender: str, calib: Calibration, *, initial: int, workdir: Path
) -> dict[str, Any]:
    spec = policy_spec(suite, trace, contender, calib)
    spec.update({
        "port": free_port(), "model": suite.model, "preset": suite.preset, "time_scale": suite.time_scale,
        "initial": initial, "engine": suite.engine, "record": str(workdir / "record.json"),
        "start_file": str(workdir / "start"),
    })  # fmt: skip
    if contender == "fixed":
        spec["initial"] = spec["params"]["replicas"]
    return spec


async def _run_sut(
    suite: AutoscaleSuite, spec: dict[str, Any], times: list[float], seed: int, duration: float
) -> tuple[list[metrics.Served], dict[str, Any], float]:
    """Start the SUT, replay ``times``, stop it; returns what was served, its record and the trace's offset."""
    workdir = Path(spec["record"]).parent
    proc = Proc(f"as-{spec['policy']}", [sys.executable, "-m", "bench.autoscaling.sut", json.dumps(spec)])
    base = f"http://127.0.0.1:{spec['port']}"
    try:
        await wait_http(proc, base + "/ready", within=60.0)
        await asyncio.sleep(0.3)
        lead = 0.2
        start_epoch = time.time() + lead
        start = time.perf_counter() + lead
        (workdir / "start").write_text(repr(start_epoch))
        served = await replay(
            base + "/v1", times, model=suite.model, prompt_tokens=suite.prompt_tokens,
            output_tokens=suite.output_tokens, seed=seed, time_scale=suite.time_scale, start=start,
            request_timeout=max(60.0, duration * suite.time_scale),
        )  # fmt: skip
    finally:
        proc.stop(timeout=30.0)
    record = _read_record(Path(spec["record"]), proc)
    proc.cleanup()
    offset = (start_epoch - record["origin"]) / suite.time_scale
    return served, record, offset


def _read_record(path: Path, proc: Proc) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"the system under test left no record: {exc}\n{proc.tail()}") from exc
    return data


async def calibrate(suite: AutoscaleSuite, progress: Progress) -> Calibration:
    """One engine, constant Poisson load at each calibration rate (the first 30 s discarded as warm-up).

    ``cap`` is the highest rate whose TTFT **p99** stays within the SLO, interpolated to the crossing: the SLO
    is judged per minute on the p90 of ~30–60 requests, which swings far more than a long run's p90, so the
    long-run p99 is what keeps a fleet loaded at ``cap`` inside the SLO minute after minute."""
    points: list[tuple[float, float, float, float, float]] = []
    for rate in suite.calibration_rates:
        progress.step(f"calibrate one engine at {rate:g} req/s", 1)
        with tempfile.TemporaryDirectory(prefix="flotilla-as-") as tmp:
            spec = _spec(
                suite, "calibration", "fixed", Calibration(rate, 1.0, 1.0), initial=1, workdir=Path(tmp)
            )
            spec["params"] = {"replicas": 1}
            times = poisson_schedule(int(rate * suite.calibration_seconds), rate, seed=999)
            served, _, _ = await _run_sut(suite, spec, times, 999, suite.calibration_seconds)
        points.append(calibration_point(rate, served))
        progress.finish_step(f"TTFT p90 {points[-1][1]:.2f} s, p99 {points[-1][2]:.2f} s")
        if points[-1][2] > suite.slo_ttft * 2:
            break
    return calibration_from(points, suite.slo_ttft)


async def run_one(
    suite: AutoscaleSuite, trace_name: str, seed: int, contender: str, calib: Calibration
) -> RunRecord:
    cap = calib.cap
    trace = suite.trace(trace_name)
    times = arrivals(trace, cap, seed=seed)
    plan = oracle.schedule(trace, cap, suite.startup_delay, min_replicas=suite.min_engines)
    initial = max(1, math.ceil(trace.level(0.0) - 1e-9))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    with tempfile.TemporaryDirectory(prefix="flotilla-as-") as tmp:
        spec = _spec(suite, trace_name, contender, calib, initial=initial, workdir=Path(tmp))
        served, record, offset = await _run_sut(suite, spec, times, seed, trace.duration)
    spans = [
        metrics.EngineSpan(*(None if e[k] is None else e[k] - offset for k in ("started", "ready", "stopped",
                                                                              "stopping")))  # type: ignore[arg-type]
        for e in record["engines"]
    ]  # fmt: skip
    served = metrics.with_hold(served, spans)
    timeline = [
        (row["t"] - offset, row["desired"], row["ready"], row["starting"])
        for row in record["timeline"]
        if 0 <= row["t"] - offset <= trace.duration
    ]
    lags = [row.get("lag", 0.0) for row in record["timeline"] if 0 <= row["t"] - offset <= trace.duration]
    attainment, good, minutes = metrics.minute_attainment(served, suite.slo_ttft, trace.duration)
    changes, reversals = metrics.scale_events([(t, d) for t, d, _, _ in timeline])
    return RunRecord(
        trace=trace_name, seed=seed, contender=contender, requests=len(served),
        failed=sum(1 for s in served if not math.isfinite(s.ttft)),
        gpu_seconds=metrics.gpu_seconds(spans, trace.duration), oracle_gpu_seconds=plan.gpu_seconds,
        attainment=attainment, good_minutes=good, minutes=minutes, ttft_p90=metrics.ttft_p90(served),
        step_to_ready=metrics.step_to_ready(spans, trace.steps), scale_changes=changes, reversals=reversals,
        timeline=timeline, load_avg=load, lag_mean=sum(lags) / len(lags) if lags else math.nan,
        lag_max=max(lags, default=math.nan),
    )  # fmt: skip


async def run_autoscale_suite(suite: AutoscaleSuite, *, command: str, progress: Progress) -> AutoscaleResult:
    if suite.clock == "virtual":
        return run_virtual_suite(suite, command=command, progress=progress)
    calib = await calibrate(suite, progress) if suite.calibration is None else suite.calibration
    result = AutoscaleResult(suite.name, command, _config(suite), calib)
    rng = random.Random(sum(suite.seeds))
    for trace_name in suite.traces:
        for seed in suite.seeds:
            order = list(suite.contenders)
            rng.shuffle(order)
            progress.step(f"{trace_name} · seed {seed} · {', '.join(order)}", len(order))
            # side by side: ``parallel`` contenders replay the trace at the same time, each in its own
            # processes, so the machine's background load falls on them alike
            records: list[RunRecord] = []
            for i in range(0, len(order), suite.parallel):
                batch = order[i : i + suite.parallel]
                records += await asyncio.gather(*(run_one(suite, trace_name, seed, c, calib) for c in batch))
            result.runs.extend(records)
            progress.finish_step(_summary(records))
    return result


def run_virtual_suite(suite: AutoscaleSuite, *, command: str, progress: Progress) -> AutoscaleResult:
    """Every trace × seed × contender in virtual time, one after another (order is moot: no shared clock)."""
    calib = calibrate_virtual(suite, progress) if suite.calibration is None else suite.calibration
    result = AutoscaleResult(suite.name, command, _config(suite), calib)
    for trace_name in suite.traces:
        for seed in suite.seeds:
            progress.step(f"{trace_name} · seed {seed} (virtual time)", len(suite.contenders))
            records = [run_one_virtual(suite, trace_name, seed, c, calib) for c in suite.contenders]
            result.runs.extend(records)
            progress.finish_step(_summary(records))
    return result


def _summary(records: list[RunRecord]) -> str:
    """One progress line for a trace × seed: each contender's GPU-hours ÷ oracle and its good minutes."""
    return "; ".join(
        f"{r.contender} GPU÷oracle {r.gpu_vs_oracle:.2f} SLO {r.good_minutes}/{r.minutes}" for r in records
    )


def _config(suite: AutoscaleSuite) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(suite)


def count_steps(suite: AutoscaleSuite) -> int:
    rates = suite.virtual_calibration_rates if suite.clock == "virtual" else suite.calibration_rates
    calib = 0 if suite.calibration is not None else len(rates)
    return calib + len(suite.traces) * len(suite.seeds)
