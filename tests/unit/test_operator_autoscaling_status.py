"""The ModelAutoscaler's spec → scaler settings, the scaler's memory ↔ status, and HPA-style conditions."""

from __future__ import annotations

import pytest

from autoscaler import (
    HELD_SCALE_DOWN_COOLDOWN,
    LIMITED_MAX,
    RUNNING,
    Autoscaler,
    Decision,
    FleetSample,
    PanicState,
    ScalerState,
)
from flotilla.crds import ModelAutoscalerSpec
from flotilla_operator import autoscaling_status as report
from flotilla_operator.autoscaling import gateway_url, plural

SPEC = ModelAutoscalerSpec.model_validate(
    {
        "scaleTargetRef": {"name": "llama"},
        "minReplicas": 0,
        "maxReplicas": 4,
        "metrics": [{"name": "num_requests_running", "target": 8}, {"name": "gateway_demand", "target": 10}],
        "windows": {"stableSeconds": 6, "panicSeconds": 2},
        "cooldowns": {"scaleDownSeconds": 3},
        "scaleToZeroGraceSeconds": 5,
        "maxScaleUpRate": 4,
    }
)


def test_settings_from_spec_carries_every_field():
    s = report.settings_from_spec(SPEC)
    assert (s.min_replicas, s.max_replicas, s.algorithm) == (0, 4, "KPA")
    assert [(m.name, m.target) for m in s.metrics] == [(RUNNING, 8.0), ("gateway_demand", 10.0)]
    assert (s.stable_window, s.panic_window, s.scale_down_cooldown, s.scale_to_zero_grace) == (6, 2, 3, 5)
    assert s.max_scale_up_rate == 4


def test_crd_defaults_are_the_scaler_defaults():
    spec = ModelAutoscalerSpec.model_validate(
        {
            "scaleTargetRef": {"name": "x"},
            "maxReplicas": 3,
            "metrics": [{"name": "kv_cache_usage", "target": 0.7}],
        }
    )
    s = report.settings_from_spec(spec)
    defaults = type(s)(max_replicas=3, metrics=s.metrics)
    assert s == defaults


@pytest.mark.parametrize(
    "state",
    [
        ScalerState(),
        ScalerState(last_scale_time=1_790_000_000.25, last_busy_time=1_790_000_010.5),
        ScalerState(
            1_790_000_000.0, None, PanicState(since=1_790_000_001.0, last_trigger=1_790_000_002.5, floor=3)
        ),
    ],
    ids=["empty", "times", "panic"],
)
def test_state_round_trips_through_the_status(state):
    fields = report.status(None, generation=1, now="2026-01-01T00:00:00Z", state=state)
    assert report.state_from_status(fields) == state


def decide(load: float, current: int, **kw) -> Decision:
    scaler = Autoscaler(report.settings_from_spec(SPEC), **kw)
    return scaler.recommend(
        FleetSample(ready=current, values={RUNNING: load}, busy=load > 0), current=current, now=100.0
    )


def test_conditions_of_a_limited_scale_up():
    decision = decide(80.0, 1)
    assert decision.desired == 4
    assert decision.limited == LIMITED_MAX
    out = report.status(
        None, generation=2, now="t0", current=1, ready=1, decision=decision,
        settings=report.settings_from_spec(SPEC), state=ScalerState(), scaled=True,
    )  # fmt: skip
    conds = {c["type"]: (c["status"], c["reason"]) for c in out["conditions"]}
    assert conds == {
        "AbleToScale": ("True", "SucceededRescale"),
        "ScalingActive": ("True", "ValidMetricFound"),
        "ScalingLimited": ("True", "TooManyReplicas"),
    }
    assert out["metrics"] == [
        {"name": RUNNING, "total": 80.0, "target": 8.0, "averageValue": 80.0, "desiredReplicas": 10}
    ]
    assert (out["currentReplicas"], out["desiredReplicas"], out["observedGeneration"]) == (1, 4, 2)


def test_a_held_change_is_able_to_scale_false_with_the_reason():
    scaler = Autoscaler(
        report.settings_from_spec(SPEC), state=ScalerState(last_scale_time=99.0, last_busy_time=99.0)
    )
    scaler.recommend(FleetSample(ready=3, values={RUNNING: 30.0}, busy=True), current=3, now=90.0)
    decision = scaler.recommend(FleetSample(ready=3, values={RUNNING: 0.0}), current=3, now=100.0)
    assert decision.held == HELD_SCALE_DOWN_COOLDOWN
    out = report.status(None, generation=1, now="t", current=3, ready=3, decision=decision,
                        settings=report.settings_from_spec(SPEC))  # fmt: skip
    assert {c["type"]: c["status"] for c in out["conditions"]}["AbleToScale"] == "False"


def test_transition_times_move_only_when_a_status_flips():
    decision = decide(8.0, 1)
    settings = report.settings_from_spec(SPEC)
    first = report.status(
        None, generation=1, now="t1", current=1, ready=1, decision=decision, settings=settings
    )
    again = report.status(
        first, generation=1, now="t2", current=1, ready=1, decision=decision, settings=settings
    )
    assert again == first
    problem = report.Problem(report.ABLE_TO_SCALE, "FailedGetScale", "gone")
    lost = report.status(again, generation=1, now="t3", problem=problem)
    conds = {c["type"]: c for c in lost["conditions"]}
    assert conds["AbleToScale"]["lastTransitionTime"] == "t3"
    assert conds["ScalingActive"]["status"] == "False"
    assert conds["ScalingLimited"]["lastTransitionTime"] == "t1"


def test_rfc3339_keeps_milliseconds():
    assert report.rfc3339(0.25) == "1970-01-01T00:00:00.250Z"
    assert report.parse_time("1970-01-01T00:00:00.250Z") == 0.25
    assert report.parse_time("not a time") is None


def test_target_plurals_and_gateway_ports():
    assert plural("ModelDeployment") == "modeldeployments"
    assert plural("StatefulSet") == "statefulsets"
    pod = {"status": {"podIP": "127.0.0.9"},
           "spec": {"containers": [{"ports": [{"name": "metrics", "containerPort": 9}, {"name": "http", "containerPort": 8080}]}]}}  # fmt: skip
    assert gateway_url(pod) == "http://127.0.0.9:8080/metrics"
    assert gateway_url({"status": {"podIP": "127.0.0.9"}, "spec": {"containers": [{}]}}) is None
