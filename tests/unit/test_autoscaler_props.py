"""Invariants of the scaler under arbitrary load sequences (hypothesis): bounds, cooldowns, no blind moves."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler import DEMAND, RUNNING, Autoscaler, FleetSample, MetricTarget, ScalerSettings

TICK = 1.0

loads = st.lists(st.floats(min_value=0, max_value=200, allow_nan=False), min_size=1, max_size=120)


@settings(max_examples=150, deadline=None)
@given(
    load=loads,
    algorithm=st.sampled_from(["KPA", "APA"]),
    min_replicas=st.integers(0, 3),
    span=st.integers(0, 5),
    cold=st.integers(0, 5),
)
def test_bounds_and_cooldowns_hold_for_any_load(load, algorithm, min_replicas, span, cold):
    s = ScalerSettings(
        min_replicas=min_replicas, max_replicas=min_replicas + span + 1, algorithm=algorithm,
        metrics=(MetricTarget(RUNNING, 10), MetricTarget(DEMAND, 10)),
        stable_window=8.0, panic_window=2.0, scale_down_cooldown=5.0, scale_to_zero_grace=3.0,
    )  # fmt: skip
    scaler = Autoscaler(s)
    current = min_replicas
    started: list[float] = [-1e9] * current
    last_scale: float | None = None
    last_busy: float | None = None
    for i, value in enumerate(load):
        now = i * TICK
        ready = sum(1 for t in started if now - t >= cold)
        busy = value > 0
        last_busy = now if busy else last_busy
        sample = FleetSample(
            ready=ready, values={RUNNING: value if ready else 0.0, DEMAND: value}, queued=value if not ready else 0.0,
            busy=busy,
        )  # fmt: skip
        d = scaler.recommend(sample, current=current, now=now)
        assert s.min_replicas <= d.desired <= s.max_replicas
        if d.desired < current:
            assert now >= s.stable_window  # never on a half-filled window
            assert ready == current  # never while pods start
            assert last_scale is None or now - last_scale >= s.scale_down_cooldown
            if d.desired == 0:
                assert last_busy is None or now - last_busy >= s.scale_to_zero_grace
        if current == 0 and value > 0:
            assert d.desired >= 1  # demand at zero always gets a pod at once
        if d.desired != current:
            last_scale = now
            started = started[: d.desired] + [now] * max(0, d.desired - current)
            current = d.desired
