"""The ModelGroup controller's pure parts: the counter window, scale-down stabilisation, bounds, shares, status."""

from __future__ import annotations

import pytest

from flotilla_operator import group_status
from optimizer import Grid, Profile, Slo, Workload, solve
from optimizer.model import ProfileTable
from optimizer.planning import CounterWindow, MemberBounds, Stabilizer, clamp, gpu_summary, routing_shares

GRID = Grid(input_bounds=(64, 1024), output_bounds=(256,))


def test_window_needs_two_scrapes_then_rates_growth_over_the_window() -> None:
    window = CounterWindow(10.0)
    window.add(0.0, {(64, 256): 100.0})
    assert window.workload(0.0, GRID, "m") is None
    window.add(5.0, {(64, 256): 150.0, (1024, 256): 5.0})
    wl = window.workload(5.0, GRID, "m")
    assert wl is not None
    assert wl.rate == ((10.0,), (1.0,))
    # after the window has filled, the base is the newest scrape at least `window` old
    window.add(12.0, {(64, 256): 170.0, (1024, 256): 5.0})
    window.add(16.0, {(64, 256): 170.0, (1024, 256): 45.0})
    wl = window.workload(16.0, GRID, "m")
    assert wl is not None
    assert [r[0] for r in wl.rate] == pytest.approx([20 / 11, 40 / 11])
    assert window.span == 11.0


def test_window_counts_a_reset_counter_from_zero() -> None:
    window = CounterWindow(10.0)
    window.add(0.0, {(64, 256): 100.0})
    window.add(2.0, {(64, 256): 4.0})
    wl = window.workload(2.0, GRID, "m")
    assert wl is not None
    assert wl.rate[0][0] == 2.0


@pytest.mark.parametrize(
    ("plans", "expected"),
    [
        pytest.param([(0, 3), (1, 5)], [3, 5], id="scale-up-at-once"),
        pytest.param([(0, 5), (1, 2), (9, 2)], [5, 5, 5], id="scale-down-held-for-the-window"),
        pytest.param([(0, 5), (1, 2), (11, 2)], [5, 5, 2], id="scale-down-after-the-window"),
        pytest.param([(0, 4), (2, 1), (4, 4), (6, 1), (8, 4)], [4, 4, 4, 4, 4], id="noise-does-not-flap"),
    ],
)
def test_stabilizer_scales_up_now_and_down_late(plans: list[tuple[float, int]], expected: list[int]) -> None:
    stab = Stabilizer(10.0)
    assert [stab.desire("a", n, t) for t, n in plans] == expected


def test_stabilizer_starts_from_current_replicas_after_a_restart() -> None:
    stab = Stabilizer(10.0)
    assert stab.desire("a", 0, 100.0, current=3) == 3
    assert stab.desire("a", 0, 111.0, current=3) == 0
    stab.forget(set())
    assert stab.desire("a", 1, 112.0) == 1


@pytest.mark.parametrize(
    ("replicas", "bounds", "expected"),
    [(0, (1, 4), 1), (7, (1, 4), 4), (2, (0, 4), 2), (3, (3, 3), 3)],
    ids=["below-min", "above-max", "inside", "pinned"],
)
def test_clamp(replicas: int, bounds: tuple[int, int], expected: int) -> None:
    assert clamp(replicas, MemberBounds(*bounds)) == expected


def _profile(gpu: str, rates: tuple[tuple[float, ...], ...], slo: Slo) -> Profile:
    return Profile(
        gpu=gpu, input_bounds=GRID.input_bounds, output_bounds=GRID.output_bounds,
        tables=(ProfileTable(slo=slo, max_rate=rates),),
    )  # fmt: skip


def test_routing_shares_keep_only_serving_types_and_summary_is_stable() -> None:
    slo = Slo(ttft=5, tpot=0.1)
    profiles = [_profile("l4", ((4.0,), (0.0,)), slo), _profile("a100-80gb", ((8.0,), (2.0,)), slo)]
    short = Workload(input_bounds=(64, 1024), output_bounds=(256,), rate=((6.0,), (0.0,)))
    plan = solve(profiles, short, {"l4": 1.0, "a100-80gb": 5.0}, slo)
    assert plan.counts == {"l4": 2, "a100-80gb": 0}
    assert routing_shares(plan) == {"l4": [[1.0], [0.0]]}
    assert gpu_summary(plan.counts) == "a100-80gb=0 l4=2"


def test_group_status_keeps_the_plan_time_while_the_split_holds_and_reports_problems() -> None:
    plan = group_status.plan_status(
        input_bounds=(64,), output_bounds=(256,), shares={"l4": [[1.0]]}, rate=2.0, cost=1.6,
        best_single=1.6, now="2026-01-01T00:00:00.000Z",
    )  # fmt: skip
    first = group_status.status(None, generation=1, now="t0", plan=plan, members=[], gpus="l4=2", cost=1.6)
    assert {c["type"]: c["status"] for c in first["conditions"]} == {"Planned": "True", "Scaled": "True"}
    later = {**plan, "rate": 2.5, "time": "2026-01-01T00:01:00.000Z"}
    second = group_status.status(first, generation=1, now="t1", plan=later, members=[], gpus="l4=2", cost=1.6)
    assert second["plan"]["time"] == "2026-01-01T00:00:00.000Z"
    problem = group_status.GroupProblem("Planned", "NoGateway", "no gateway found")
    third = group_status.status(second, generation=2, now="t2", problem=problem)
    assert "plan" not in third  # a merge patch without it keeps the last good plan
    planned = next(c for c in third["conditions"] if c["type"] == "Planned")
    assert (planned["status"], planned["reason"], planned["lastTransitionTime"]) == (
        "False",
        "NoGateway",
        "t2",
    )


def test_stabilizer_without_a_window_follows_the_plan_at_once() -> None:
    assert Stabilizer(0.0).desire("a", 0, 100.0, current=3) == 0
