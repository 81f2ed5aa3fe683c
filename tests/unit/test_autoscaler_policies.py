"""KPA and APA as tables: fleet-total load per window in, replicas out (autoscaler/kpa.py, apa.py)."""

from __future__ import annotations

import pytest

from autoscaler import (
    KPA,
    POLICIES,
    RUNNING,
    WAITING,
    MetricLoad,
    MetricTarget,
    PanicState,
    PolicyInput,
    ScalerSettings,
    policy_named,
)

SETTINGS = ScalerSettings(max_replicas=100, metrics=(MetricTarget(RUNNING, 10),))


def run(policy: str, stable: float | None, panic: float | None, current: int, ready: int, **kw: object):
    settings = ScalerSettings(**{"max_replicas": 100, "metrics": (MetricTarget(RUNNING, 10),), **kw})  # type: ignore[arg-type]
    loads = (MetricLoad(RUNNING, 10, stable, panic),)
    return POLICIES[policy].recommend(PolicyInput(100.0, current, ready, loads, settings))


@pytest.mark.parametrize(
    ("policy", "stable", "panic", "current", "ready", "expected"),
    [
        ("KPA", 40, 40, 2, 2, 4),
        ("KPA", 20, 20, 2, 2, 2),
        ("KPA", 21, 21, 2, 2, 2),  # 1.05 per target: inside the 10 % band
        ("KPA", 23, 23, 2, 2, 3),
        ("KPA", 17, 17, 2, 2, 2),  # 0.85: below the band -> ceil(1.7) = 2 anyway
        ("KPA", 5, 5, 4, 4, 2),  # down at most halves (max_scale_down_rate 2)
        ("KPA", 400, 40, 2, 2, 4),  # up at most doubles
        ("KPA", 0, 0, 1, 1, 0),  # no load: the policy wants 0 (bounds are the scaler's job)
        ("KPA", 40, 40, 4, 1, 4),  # pods still starting: the total load still wants 4
        ("KPA", None, None, 3, 3, None),  # no data: no recommendation
        ("APA", 40, None, 2, 2, 4),
        ("APA", 21, None, 2, 2, 2),
        ("APA", 5, None, 4, 4, 2),
        ("APA", 400, None, 2, 2, 4),
        ("APA", 30, None, 0, 0, 2),  # from zero: ceil(L/T) clamped by the up rate from max(current, 1)
        ("APA", None, None, 3, 3, None),
    ],
    ids=[
        "kpa-double",
        "kpa-at-target",
        "kpa-in-band",
        "kpa-above-band",
        "kpa-below-band-same-count",
        "kpa-down-rate",
        "kpa-up-rate",
        "kpa-idle",
        "kpa-starting-pods",
        "kpa-no-data",
        "apa-double",
        "apa-in-band",
        "apa-down-rate",
        "apa-up-rate",
        "apa-from-zero",
        "apa-no-data",
    ],
)
def test_stable_recommendation(policy, stable, panic, current, ready, expected):
    assert run(policy, stable, panic, current, ready).desired == expected


def test_largest_metric_wins():
    settings = ScalerSettings(max_replicas=100, metrics=(MetricTarget(RUNNING, 10), MetricTarget(WAITING, 2)))
    loads = (MetricLoad(RUNNING, 10, 20, 20), MetricLoad(WAITING, 2, 6, 6))
    for name in POLICIES:
        result = POLICIES[name].recommend(PolicyInput(0.0, 2, 2, loads, settings))
        assert result.per_metric == {RUNNING: 2, WAITING: 3}
        assert result.desired == 3


def test_kpa_panics_on_a_burst_and_never_scales_down_while_in_panic():
    kpa = KPA()
    # stable window still low, panic window wants 4x the ready pods -> panic, panic want decides
    first = kpa.recommend(PolicyInput(10.0, 2, 2, (MetricLoad(RUNNING, 10, 25, 80),), SETTINGS))
    assert first.panic.active
    assert first.panic.since == 10.0
    assert first.desired == 4  # 8 wanted, clamped by the up rate 2 x 2
    # burst over: panic load zero, but still in panic -> keep the previous panic decision
    later = kpa.recommend(PolicyInput(50.0, 4, 4, (MetricLoad(RUNNING, 10, 10, 0),), SETTINGS, first.panic))
    assert later.panic.active
    assert later.desired == 4
    # a full stable window after the last trigger: panic ends, the stable window decides again
    end = kpa.recommend(
        PolicyInput(10.0 + 180.0, 4, 4, (MetricLoad(RUNNING, 10, 10, 0),), SETTINGS, later.panic)
    )
    assert not end.panic.active
    assert end.desired == 2  # ceil(10/10) = 1, but at most halved per decision


def test_kpa_panics_from_zero_ready_pods():
    result = KPA().recommend(PolicyInput(0.0, 0, 0, (MetricLoad(RUNNING, 10, 5, 5),), SETTINGS))
    assert result.panic.active
    assert result.desired == 1


def test_apa_has_no_panic():
    state = PanicState()
    result = POLICIES["APA"].recommend(
        PolicyInput(0.0, 2, 2, (MetricLoad(RUNNING, 10, 20, 200),), SETTINGS, state)
    )
    assert result.desired == 2
    assert not result.panic.active


def test_registry_names_and_unknown():
    assert sorted(POLICIES) == ["APA", "KPA"]
    assert policy_named("APA").name == "APA"
    with pytest.raises(ValueError, match="unknown scaling algorithm 'HPA'"):
        policy_named("HPA")


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"min_replicas": 3, "max_replicas": 2}, "min_replicas"),
        ({"metrics": ()}, "at least one metric"),
        ({"metrics": (MetricTarget(RUNNING, 1), MetricTarget(RUNNING, 2))}, "twice"),
        ({"panic_window": 200.0}, "panic_window"),
        ({"panic_threshold": 1.0}, "panic_threshold"),
        ({"max_scale_down_rate": 1.0}, "rates"),
        ({"scale_down_cooldown": -1.0}, "cooldowns"),
    ],
    ids=["min-gt-max", "no-metrics", "duplicate", "panic-longer", "threshold", "rate", "cooldown"],
)
def test_invalid_settings_are_refused(kw, message):
    base = {"max_replicas": 5, "metrics": (MetricTarget(RUNNING, 1),)}
    with pytest.raises(ValueError, match=message):
        ScalerSettings(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "target"), [("gpu_util", 1.0), (RUNNING, 0.0)], ids=["unknown", "zero"])
def test_invalid_metric_targets_are_refused(name, target):
    with pytest.raises(ValueError, match="metric"):
        MetricTarget(name, target)


def test_kpa_panic_compares_with_the_replicas_asked_for_not_the_ready_ones():
    # 4 replicas of which 2 are still loading; the burst wants 5: short of what is coming by less than 2x
    loads = (MetricLoad(RUNNING, 10, 30, 50),)
    assert not KPA().recommend(PolicyInput(0.0, 4, 2, loads, SETTINGS)).panic.active
    # the same burst against 2 replicas is a panic
    assert KPA().recommend(PolicyInput(0.0, 2, 2, loads, SETTINGS)).panic.active
