"""The scaler on fake time: bounds, holds, cooldowns, scale to zero and back, restarts, no flapping."""

from __future__ import annotations

import itertools
import random

import pytest

from autoscaler import (
    DEMAND,
    HELD_METRICS_MISSING,
    HELD_PODS_NOT_READY,
    HELD_SCALE_DOWN_COOLDOWN,
    HELD_WINDOW_FILLING,
    LIMITED_DOWN_RATE,
    LIMITED_MAX,
    LIMITED_MIN,
    LIMITED_UP_RATE,
    RUNNING,
    Autoscaler,
    FleetSample,
    MetricTarget,
    ScalerSettings,
)

TICK = 2.0


def settings(**kw: object) -> ScalerSettings:
    base: dict[str, object] = {
        "max_replicas": 10,
        "metrics": (MetricTarget(RUNNING, 10),),
        "stable_window": 20.0,
        "panic_window": 4.0,
        "scale_down_cooldown": 10.0,
        "scale_to_zero_grace": 6.0,
    }
    return ScalerSettings(**{**base, **kw})  # type: ignore[arg-type]


def busy(load: float, ready: int, **kw: object) -> FleetSample:
    return FleetSample(ready=ready, values={RUNNING: load}, busy=load > 0, **kw)  # type: ignore[arg-type]


class Fleet:
    """Applies every decision at once and makes pods ready after ``cold`` seconds."""

    def __init__(self, scaler: Autoscaler, replicas: int, cold: float = 0.0) -> None:
        self.scaler = scaler
        self.replicas = replicas
        self.cold = cold
        self.started: list[float] = [-1e9] * replicas
        self.now = 0.0
        self.history: list[int] = []

    def ready(self) -> int:
        return sum(1 for t in self.started[: self.replicas] if self.now - t >= self.cold)

    def tick(self, load: float, **kw: object):
        ready = self.ready()
        sample = FleetSample(ready=ready, values={RUNNING: load if ready else 0.0}, busy=load > 0, **kw)  # type: ignore[arg-type]
        decision = self.scaler.recommend(sample, current=self.replicas, now=self.now)
        if decision.scale:
            if decision.desired > self.replicas:
                self.started = self.started[: self.replicas] + [self.now] * (decision.desired - self.replicas)
            self.replicas = decision.desired
        self.history.append(self.replicas)
        self.now += TICK
        return decision

    def run(self, load: float, seconds: float):
        decision = None
        for _ in range(int(seconds / TICK)):
            decision = self.tick(load)
        return decision


@pytest.mark.parametrize("algorithm", ["KPA", "APA"])
def test_scales_up_with_load_and_back_down_after_the_windows(algorithm):
    fleet = Fleet(Autoscaler(settings(algorithm=algorithm)), replicas=1)
    fleet.run(0.0, 30)
    assert fleet.replicas == 1
    fleet.run(45.0, 30)
    assert fleet.replicas == 5
    top = len(fleet.history)
    fleet.run(5.0, 60)
    assert fleet.replicas == 1
    # down as the stable window absorbs the drop: gradually, never below half per step, never back up
    down = fleet.history[top:]
    assert down[0] == 5
    assert down[1] > 1
    assert all(a // 2 <= b <= a for a, b in itertools.pairwise(down))


def test_panic_reacts_within_the_panic_window():
    fleet = Fleet(Autoscaler(settings()), replicas=2)
    fleet.run(20.0, 30)
    decision = fleet.run(80.0, 4)
    assert decision is not None
    assert decision.panic
    assert fleet.replicas >= 4


def test_bounds_are_reported():
    fleet = Fleet(Autoscaler(settings(max_replicas=3, min_replicas=2)), replicas=2)
    d = fleet.run(200.0, 20)
    assert d is not None
    assert fleet.replicas == 3
    assert d.limited == LIMITED_MAX
    d = fleet.run(0.0, 60)
    assert d is not None
    assert fleet.replicas == 2
    assert d.limited == LIMITED_MIN


def test_no_scale_down_until_the_stable_window_is_full():
    scaler = Autoscaler(settings())
    d = scaler.recommend(busy(0.0, 4), current=4, now=1000.0)
    assert d.desired == 4
    assert d.held == HELD_WINDOW_FILLING
    d = scaler.recommend(busy(0.0, 4), current=4, now=1020.0)
    assert d.desired == 2
    assert d.held is None


def test_no_scale_down_while_a_pod_does_not_answer():
    scaler = Autoscaler(settings())
    scaler.recommend(busy(0.0, 4), current=4, now=0.0)
    d = scaler.recommend(busy(0.0, 3, missing=1), current=4, now=30.0)
    assert d.desired == 4
    assert d.held == HELD_METRICS_MISSING


def test_scale_down_cooldown_after_any_scaling():
    scaler = Autoscaler(settings(scale_down_cooldown=50.0))
    for t in range(0, 22, 2):
        scaler.recommend(busy(30.0, 3), current=3, now=float(t))
    t, current = 22, 3
    while current == 3:
        current = scaler.recommend(busy(60.0, 3), current=3, now=float(t)).desired
        t += 2
    scaled_at = t - 2
    assert current == 6
    while t < scaled_at + 50:
        d = scaler.recommend(busy(0.0, 6), current=6, now=float(t))
        assert d.desired == 6
        t += 2
    assert d.held == HELD_SCALE_DOWN_COOLDOWN
    assert scaler.recommend(busy(0.0, 6), current=6, now=float(t)).desired == 3


def test_scale_to_zero_after_the_grace_period_and_back_on_demand():
    s = settings(min_replicas=0, metrics=(MetricTarget(RUNNING, 10), MetricTarget(DEMAND, 10)))
    fleet = Fleet(Autoscaler(s), replicas=1, cold=10.0)
    fleet.run(5.0, 30)
    assert fleet.replicas == 1
    fleet.run(0.0, 4)
    assert fleet.replicas == 1  # the grace period (6 s) and the down cooldown are not over
    fleet.run(0.0, 30)
    assert fleet.replicas == 0
    # a request arrives: the gateway holds it, the scaler asks for one pod on the next tick
    d = fleet.tick(0.0, queued=1.0)
    assert d.scale
    assert d.desired == 1
    assert "no pods" in d.reason
    # while the pod starts, nothing flaps back to zero
    for _ in range(10):
        fleet.tick(0.0, queued=1.0)
        assert fleet.replicas == 1


def test_zero_stays_zero_without_demand_even_right_after_a_restart():
    scaler = Autoscaler(settings(min_replicas=0))
    for t in range(0, 40, 2):
        d = scaler.recommend(FleetSample(ready=0, values={RUNNING: 0.0}), current=0, now=float(t))
        assert d.desired == 0


def test_restart_keeps_state_and_does_not_flap():
    s = settings(scale_down_cooldown=60.0)
    first = Fleet(Autoscaler(s), replicas=2)
    first.run(20.0, 30)
    first.run(60.0, 6)
    assert first.replicas == 6
    saved = first.scaler.state
    # the operator restarts just after the scale-up; load has dropped meanwhile
    second = Fleet(Autoscaler(s, state=saved), replicas=first.replicas)
    second.now = first.now
    second.run(10.0, 40)
    assert second.history == [6] * len(second.history)
    assert second.scaler.state.last_scale_time == saved.last_scale_time


def test_restore_undoes_a_decision_that_was_not_applied():
    scaler = Autoscaler(settings())
    before = scaler.state
    d = scaler.recommend(busy(50.0, 1), current=1, now=0.0)
    assert d.scale
    assert scaler.state.last_scale_time == 0.0
    scaler.restore(before)
    assert scaler.state == before


def test_no_data_keeps_the_count_and_says_so():
    d = Autoscaler(settings()).recommend(FleetSample(ready=0, missing=3), current=3, now=0.0)
    assert not d.active
    assert d.desired == 3
    assert "no metric has data" in d.reason


@pytest.mark.parametrize("algorithm", ["KPA", "APA"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_noisy_steady_load_never_flaps(algorithm, seed):
    rng = random.Random(seed)
    fleet = Fleet(Autoscaler(settings(algorithm=algorithm)), replicas=4, cold=6.0)
    for _ in range(300):
        fleet.tick(max(0.0, rng.gauss(38.0, 6.0)))
    changes = [(a, b) for a, b in zip(fleet.history, fleet.history[1:], strict=False) if a != b]
    reversals = sum(1 for (a, b), (c, d) in itertools.pairwise(changes) if (b - a) * (d - c) < 0)
    assert reversals == 0, fleet.history


@pytest.mark.parametrize(
    ("load", "current", "max_replicas", "expected", "reason"),
    [
        (100.0, 2, 10, 4, LIMITED_UP_RATE),
        (100.0, 2, 4, 4, LIMITED_MAX),
        (20.0, 2, 10, 2, None),
    ],
    ids=["up-rate", "max", "free"],
)
def test_limited_reason_names_what_cut_the_want(load, current, max_replicas, expected, reason):
    scaler = Autoscaler(settings(max_replicas=max_replicas, algorithm="APA"))
    d = scaler.recommend(busy(load, current), current=current, now=0.0)
    assert d.desired == expected
    assert d.limited == reason


def test_down_rate_limit_is_reported():
    scaler = Autoscaler(settings())
    scaler.recommend(busy(0.0, 8), current=8, now=0.0)
    d = scaler.recommend(busy(0.0, 8), current=8, now=30.0)
    assert d.desired == 4
    assert d.limited == LIMITED_DOWN_RATE


def test_no_scale_down_while_pods_are_still_starting():
    scaler = Autoscaler(settings())
    scaler.recommend(busy(0.0, 2), current=4, now=0.0)
    d = scaler.recommend(busy(0.0, 2), current=4, now=30.0)
    assert d.desired == 4
    assert d.held == HELD_PODS_NOT_READY
    assert scaler.recommend(busy(0.0, 4), current=4, now=32.0).desired == 2
