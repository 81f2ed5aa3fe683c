"""The suite's runs in virtual time (``--clock virtual``, the default): calibration and trace × seed × contender
on :class:`bench.autoscaling.virtual.Fleet`, with the same policies, traces, oracle and metrics as the
wall-clock mode. Contender order does not matter here (nothing is shared, nothing reads a clock), so there is no
shuffling and no parallelism to balance.
"""

from __future__ import annotations

import math

from bench.arrivals import poisson_schedule
from bench.autoscaling import metrics, oracle
from bench.autoscaling.baselines import Fixed
from bench.autoscaling.spec import (
    MAX_MINUTE_MISS,
    AutoscaleSuite,
    Calibration,
    RunRecord,
    calibration_from,
    calibration_point,
    initial_engines,
    policy_spec,
)
from bench.autoscaling.sut import build_policy
from bench.autoscaling.traces import arrivals
from bench.autoscaling.virtual import Fleet
from bench.progress import Progress
from engine_sim.config import EngineConfig

#: the seed of calibration arrivals (never a reported seed)
CALIBRATION_SEED = 999


def engine_config(suite: AutoscaleSuite) -> EngineConfig:
    return EngineConfig(model=suite.model, preset=suite.preset, **suite.engine)


def fleet(suite: AutoscaleSuite, policy: object, seed: int) -> Fleet:
    return Fleet(
        engine_config(suite), policy, min_engines=suite.min_engines, max_engines=suite.max_engines,  # type: ignore[arg-type]
        startup_delay=suite.startup_delay, prompt_tokens=suite.prompt_tokens, output_tokens=suite.output_tokens,
        seed=seed,
    )  # fmt: skip


def calibrate_virtual(suite: AutoscaleSuite, progress: Progress) -> Calibration:
    """:func:`bench.autoscaling.runner.calibrate` in virtual time: one engine, constant Poisson load at each
    rate for ``suite.virtual_calibration_seconds`` (hours: hundreds of minutes per rate). ``cap`` = the highest
    rate at which at most ``MAX_MINUTE_MISS`` of the minutes miss the SLO as the suite judges it (TTFT p90 per
    minute), interpolated. The wall-clock calibration's long-run p99 criterion, over 300 s, let the engine
    miss ~1.5 % of minutes at ``cap`` — more than the 99 % goal allows even the oracle."""
    points, misses = [], []
    for rate in suite.virtual_calibration_rates:
        progress.step(f"calibrate one engine at {rate:g} req/s (virtual time)", 1)
        seconds = suite.virtual_calibration_seconds
        times = poisson_schedule(int(rate * seconds), rate, seed=CALIBRATION_SEED)
        run = fleet(suite, Fixed(1), CALIBRATION_SEED).run(times, seconds, initial=1)
        points.append(calibration_point(rate, run.served))
        attainment, _, _ = metrics.minute_attainment(
            [s for s in run.served if s.at >= 60.0], suite.slo_ttft, seconds
        )
        misses.append(1.0 - attainment)
        progress.finish_step(f"TTFT p99 {points[-1][2]:.2f} s, {misses[-1]:.1%} of minutes missed")
        if misses[-1] > 4 * MAX_MINUTE_MISS:
            break
    return calibration_from(points, suite.slo_ttft, misses)


def run_one_virtual(
    suite: AutoscaleSuite, trace_name: str, seed: int, contender: str, calib: Calibration
) -> RunRecord:
    trace = suite.trace(trace_name)
    times = arrivals(trace, calib.cap, seed=seed)
    plan = oracle.schedule(trace, calib.cap, suite.startup_delay, min_replicas=suite.min_engines)
    spec = policy_spec(suite, trace_name, contender, calib)
    run = fleet(suite, build_policy(spec), seed).run(
        times, trace.duration, initial=initial_engines(suite, trace, spec)
    )
    timeline = [row for row in run.timeline if 0 <= row[0] <= trace.duration]
    attainment, good, minutes = metrics.minute_attainment(run.served, suite.slo_ttft, trace.duration)
    changes, reversals = metrics.scale_events([(t, d) for t, d, _, _ in timeline])
    return RunRecord(
        trace=trace_name, seed=seed, contender=contender, requests=len(run.served),
        failed=sum(1 for s in run.served if not math.isfinite(s.ttft)),
        gpu_seconds=metrics.gpu_seconds(run.spans, trace.duration), oracle_gpu_seconds=plan.gpu_seconds,
        attainment=attainment, good_minutes=good, minutes=minutes, ttft_p90=metrics.ttft_p90(run.served),
        step_to_ready=metrics.step_to_ready(run.spans, trace.steps), scale_changes=changes, reversals=reversals,
        timeline=timeline, lag_mean=0.0, lag_max=0.0,
    )  # fmt: skip
