"""The autoscaling suite's pure parts: traces and arrivals, the HPA-like baseline, the oracle, the metrics."""

from __future__ import annotations

import math

import pytest

from bench.autoscaling import metrics, oracle
from bench.autoscaling.baselines import Fixed, HpaLike
from bench.autoscaling.metrics import EngineSpan, Served
from bench.autoscaling.report import interval
from bench.autoscaling.spec import calibration_from, capacity_from
from bench.autoscaling.traces import TRACES, Trace, _piecewise, arrivals, scaled
from flotilla.cli.local_scaler import Observation

pytestmark = pytest.mark.timeout(30)


def obs(now: float, ready: int, running: tuple[int, ...] = (), starting: int = 0, demand: float = 0.0):
    return Observation(now=now, ready=ready, starting=starting, in_flight=demand, queued=0.0, running=running)


# ---------------------------------------------------------------- traces
@pytest.mark.parametrize("name", sorted(TRACES))
def test_traces_have_their_shape(name: str) -> None:
    trace = TRACES[name]()
    assert trace.duration > 0
    assert trace.peak() == pytest.approx(1.5 if name == "quiet" else 3.0, abs=0.01)
    for s in trace.steps:
        assert trace.level(s) > trace.level(s - 1.0)  # a step is a rise in load


def test_arrivals_follow_the_rate_and_are_seeded() -> None:
    trace = Trace("t", "", 1000.0, _piecewise((0, 1.0), (500, 3.0)))
    a = arrivals(trace, 2.0, seed=7)
    assert a == arrivals(trace, 2.0, seed=7)
    assert a != arrivals(trace, 2.0, seed=8)
    first = sum(1 for t in a if t < 500)
    second = sum(1 for t in a if t >= 500)
    assert first == pytest.approx(1000, rel=0.1)  # 2 req/s × 500 s
    assert second == pytest.approx(3000, rel=0.1)  # 6 req/s × 500 s
    assert all(0 <= t < 1000 for t in a)
    assert a == sorted(a)


def test_quiet_trace_sends_nothing_while_quiet() -> None:
    trace = TRACES["quiet"]()
    a = arrivals(trace, 1.0, seed=1)
    assert not [t for t in a if 90 <= t < 270]


def test_scaled_trace_is_shorter_with_the_same_shape() -> None:
    step = TRACES["step"]()
    half = scaled(step, 2.0)
    assert half.duration == step.duration / 2
    assert half.steps == (30.0,)
    assert half.level(40) == step.level(80)
    with pytest.raises(ValueError, match="> 0"):
        scaled(step, 0)


# ---------------------------------------------------------------- HPA-like
def test_hpa_scales_up_by_the_ratio_and_only_at_sync_periods() -> None:
    hpa = HpaLike(target=2.0)
    assert hpa.decide(obs(0, 2, (4, 4))).desired == 4  # ratio 2 → double
    assert hpa.decide(obs(5, 2, (4, 4), starting=2)).desired == 4  # between syncs the decision stands


def test_hpa_scale_up_is_limited_per_period() -> None:
    hpa = HpaLike(target=1.0)
    assert hpa.decide(obs(0, 1, (10,))).desired == 5  # max(100 %, 4 pods) per 15 s: 1 → 5, not 10


def test_hpa_counts_starting_pods_as_idle_for_a_scale_up() -> None:
    hpa = HpaLike(target=2.0)
    # 2 ready pods at 2.4 (ratio 1.2) but 2 more starting: spread over 4 the ratio is 0.6 → no change
    assert hpa.decide(obs(0, 2, (3, 3), starting=2)).desired == 4


def test_hpa_tolerance_keeps_the_count() -> None:
    hpa = HpaLike(target=2.0)
    assert hpa.decide(obs(0, 10, (2,) * 9 + (3,))).desired == 10  # ratio 1.05
    assert hpa.decide(obs(15, 10, (2,) * 8 + (3, 3))).desired == 10  # ratio 1.10: still within tolerance
    assert hpa.decide(obs(30, 10, (2,) * 7 + (3, 3, 3))).desired == 12  # ratio 1.15 → ceil(11.5)


def test_hpa_scale_down_waits_for_the_stabilisation_window() -> None:
    hpa = HpaLike(target=2.0)
    assert hpa.decide(obs(0, 4, (2, 2, 2, 2))).desired == 4
    for t in range(15, 300, 15):
        assert hpa.decide(obs(t, 4, (1, 0, 0, 0))).desired == 4, t  # the highest proposal of 300 s is 4
    assert hpa.decide(obs(315, 4, (1, 0, 0, 0))).desired == 1


def test_hpa_never_goes_below_one() -> None:
    hpa = HpaLike(target=2.0, stabilization=0.0)
    assert hpa.decide(obs(0, 2, (0, 0))).desired == 1


def test_fixed_is_fixed() -> None:
    assert Fixed(3).decide(obs(0, 0)).desired == 3


# ---------------------------------------------------------------- oracle
def step_trace() -> Trace:
    return Trace("t", "", 300.0, _piecewise((0, 1.0), (100, 3.0), (200, 1.0)))


def test_oracle_starts_engines_one_cold_start_ahead() -> None:
    plan = oracle.schedule(step_trace(), 1.0, 30.0)
    assert plan.alive(0) == 1
    assert plan.alive(69) == 1
    assert plan.alive(70) == 3  # two engines start at 100 − 30
    assert plan.alive(199) == 3
    assert plan.alive(200) == 1
    # 1 engine all along + 2 × (100 s needed + 30 s cold start)
    assert plan.gpu_seconds == pytest.approx(300 + 2 * 130)
    assert plan.peak == 3


def test_oracle_bridges_gaps_shorter_than_a_cold_start() -> None:
    trace = Trace("t", "", 300.0, _piecewise((0, 2.0), (100, 1.0), (120, 2.0), (200, 1.0)))
    plan = oracle.schedule(trace, 1.0, 30.0)
    # the second engine is idle for 20 s < 30 s: keeping it is cheaper than a restart
    assert plan.intervals[1] == ((0.0, 200.0),)
    plan = oracle.schedule(trace, 1.0, 10.0)
    assert plan.intervals[1] == ((0.0, 100.0), (110.0, 200.0))


def test_oracle_scales_to_zero_and_back_warm_in_time() -> None:
    trace = Trace("t", "", 300.0, _piecewise((0, 1.0), (60, 0.0), (200, 1.0)))
    plan = oracle.schedule(trace, 2.0, 30.0)
    assert plan.intervals == (((0.0, 60.0), (170.0, 300.0)),)
    assert plan.alive(100) == 0
    assert oracle.schedule(trace, 2.0, 30.0, min_replicas=1).alive(100) == 1


def test_oracle_needs_ceil_of_rate_over_capacity() -> None:
    trace = Trace("t", "", 10.0, lambda t: 2.5)
    assert oracle.needed(trace, 1.0)[0] == 3
    assert oracle.needed(Trace("t", "", 10.0, lambda t: 2.0), 1.0)[0] == 2  # exact multiples: no extra engine


# ---------------------------------------------------------------- metrics
def test_gpu_seconds_clip_to_the_trace_window() -> None:
    spans = [EngineSpan(-10.0, -10.0, None), EngineSpan(50.0, 80.0, 120.0), EngineSpan(90.0, None, 95.0)]
    assert metrics.gpu_seconds(spans, 100.0) == pytest.approx(100 + 50 + 5)


def test_minute_attainment_uses_each_minutes_p90_and_counts_failures() -> None:
    served = [Served(t, 0.5) for t in range(60)]  # minute 0: all fast
    served += [Served(60 + t, 0.5 if t < 50 else 5.0) for t in range(60)]  # minute 1: 10/60 slow → p90 slow
    served += [Served(120 + t, 0.5 if t else math.inf) for t in range(60)]  # minute 2: one failure
    frac, good, counted = metrics.minute_attainment(served, 2.0, 240.0)
    assert (good, counted) == (2, 3)  # minute 3 had no requests and is not counted
    assert frac == pytest.approx(2 / 3)


def test_hold_adds_the_wait_for_the_next_ready_engine() -> None:
    spans = [EngineSpan(0.0, 0.0, 100.0, stopping=50.0), EngineSpan(80.0, 140.0, None)]
    out = metrics.with_hold([Served(10, 0.1), Served(60, 0.1), Served(150, 0.2)], spans)
    assert [round(s.ttft, 3) for s in out] == [0.1, 80.1, 0.2]
    assert metrics.with_hold([Served(10, 0.1)], [])[0].ttft == math.inf


def test_step_to_ready_is_the_first_ready_after_the_step() -> None:
    spans = [EngineSpan(0, 0, None), EngineSpan(65, 125, None), EngineSpan(70, 131, None)]
    assert metrics.step_to_ready(spans, [60.0]) == [65.0]
    assert math.isnan(metrics.step_to_ready(spans, [200.0])[0])


def test_scale_events_count_reversals_within_the_window() -> None:
    desired = [(0, 1), (10, 3), (20, 2), (200, 2), (400, 4), (410, 4)]
    assert metrics.scale_events(desired, reversal_window=60.0) == (3, 1)


def test_capacity_interpolates_to_the_slo_crossing() -> None:
    assert capacity_from([(0.4, 1.0), (0.6, 3.0)], 2.0) == pytest.approx(0.5)
    assert capacity_from([(0.4, 1.0), (0.6, 1.5)], 2.0) == pytest.approx(0.6)
    with pytest.raises(RuntimeError, match="misses"):
        capacity_from([(0.4, 3.0)], 2.0)


def test_the_virtual_calibration_sizes_cap_by_minutes_missing_the_slo() -> None:
    points = [(0.4, 0.1, 1.0, 3.4, 3.3), (0.5, 0.3, 1.9, 3.5, 3.3), (0.6, 1.0, 2.5, 3.7, 3.3)]
    # 0 % of minutes missed at 0.4, 1 % at 0.5: the 0.5 % crossing is half-way, whatever the p99 says
    cal = calibration_from(points, 2.0, [0.0, 0.01, 0.05])
    assert cal.criterion == "minutes"
    assert cal.cap == pytest.approx(0.45)
    assert cal.concurrency == pytest.approx(0.45 * 3.4)  # Little's law at the highest point below cap
    assert calibration_from(points, 2.0).cap == pytest.approx(0.5 + 0.1 * 0.1 / 0.6)  # the p99 criterion


def test_interval_is_a_student_t_interval() -> None:
    mean, half = interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert half == pytest.approx(4.30 * 1.0 / math.sqrt(3), rel=1e-3)
    assert math.isnan(interval([1.0])[1])
    assert math.isnan(interval([])[0])


# ---------------------------------------------------------------- report and results file
def result_with(runs):
    import dataclasses

    from bench.autoscaling.spec import AutoscaleResult, AutoscaleSuite, Calibration

    return AutoscaleResult("autoscaling", "flotilla bench --suite autoscaling", dataclasses.asdict(AutoscaleSuite("x")),
                           Calibration(0.7, 2.5, 2.4, [(0.5, 0.1, 0.8, 3.4, 3.3)]), runs)  # fmt: skip


def record(contender, seed, gpu, attainment):
    from bench.autoscaling.spec import RunRecord

    return RunRecord(trace="step", seed=seed, contender=contender, requests=100, failed=0, gpu_seconds=gpu,
                     oracle_gpu_seconds=100.0, attainment=attainment, good_minutes=6, minutes=7, ttft_p90=1.0,
                     step_to_ready=[61.0], scale_changes=4, reversals=0, timeline=[(0.0, 1, 1, 0), (10.0, 2, 1, 1)],
                     lag_mean=0.1, lag_max=1.0)  # fmt: skip


def test_goal_check_states_met_and_missed_plainly() -> None:
    from bench.autoscaling.report import goal_check

    runs = [record("kpa", s, g, a) for s, g, a in ((1, 105.0, 1.0), (2, 108.0, 1.0))]
    runs += [record("apa", s, 150.0, 0.9) for s in (1, 2)]
    runs += [record("hpa", s, 200.0, 0.95) for s in (1, 2)]
    lines = goal_check(result_with(runs))
    kpa = next(line for line in lines if "Flotilla KPA" in line)
    apa = next(line for line in lines if "Flotilla APA" in line)
    assert "1.06× the oracle (goal ≤ 1.10×: met)" in kpa
    assert "(goal ≥ 99 %: met)" in kpa
    assert "cheaper and more within SLO" in kpa
    assert "missed by 0.40×" in apa
    assert "missed by 9.0 points" in apa
    assert "not more within SLO" in apa


def test_report_renders_and_the_results_file_round_trips() -> None:
    from bench.autoscaling.report import render
    from bench.autoscaling.suite import from_json, to_json

    result = result_with([record("kpa", 1, 120.0, 6 / 7), record("hpa", 1, 200.0, 5 / 7)])
    text = render(result, {"step": ["autoscaling-step.png"]})
    assert "### Trace `step`" in text
    assert "| Flotilla KPA | 1.20 |" in text
    assert "![step](autoscaling-step.png)" in text
    assert "capacity at the SLO **0.700 req/s**" in text
    again = from_json(to_json(result))
    assert again.runs == result.runs
    assert again.calibration.cap == 0.7


def test_a_virtual_result_renders_its_clock_bound_and_calibration_and_round_trips() -> None:
    import dataclasses

    from bench.autoscaling.report import render
    from bench.autoscaling.suite import from_json, to_json

    result = result_with([record("kpa", 1, 120.0, 6 / 7), record("reactive", 1, 80.0, 5 / 7)])
    result.config["clock"] = "virtual"
    result.calibration = dataclasses.replace(result.calibration, minute_misses=[0.002], criterion="minutes")
    text = render(result, {})
    assert "Clock: **virtual**" in text
    assert "engine lag mean" not in text  # no lag column: virtual time has none
    assert "≤ 0.5 % of minutes miss the SLO" in text
    assert "| 0.5 | 0.10 | 0.80 | 3.40 | 0.2% |" in text
    assert "**Reactive bound** on `step`: 71.4% of minutes" in text
    assert "no policy that reacts to the load it sees" in text
    again = from_json(to_json(result))
    assert again.calibration == result.calibration
