"""Pure translation between a ``ModelAutoscaler`` object and the ``autoscaler`` package. No I/O.

- ``settings_from_spec``: the CRD spec → ``ScalerSettings`` (the CRD's schema already refused what
  ``ScalerSettings`` would, so a ``ValueError`` here means an old CRD; the controller reports it).
- ``state_from_status`` / the ``status`` fields: the scaler's memory (last scale time, last traffic, panic) is
  kept in the object's status as RFC 3339 times, so a restarted or newly elected operator resumes where the
  previous one stopped instead of starting from a blank slate.
- ``status``: current/desired/ready replicas, the metric values the decision used, and HPA's three
  conditions — AbleToScale (can the target be read and written, or is a change being held back, and why),
  ScalingActive (does the decision rest on metrics), ScalingLimited (did min/max bound it). Condition
  transition times move only when a status flips (``status.merge_conditions``), so an idle autoscaler
  recomputes an identical status and the controller skips the write.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from autoscaler import Decision, MetricTarget, PanicState, ScalerSettings, ScalerState
from flotilla.crds import ModelAutoscalerSpec
from flotilla_operator.status import condition, merge_conditions

ABLE_TO_SCALE = "AbleToScale"
SCALING_ACTIVE = "ScalingActive"
SCALING_LIMITED = "ScalingLimited"


def settings_from_spec(spec: ModelAutoscalerSpec) -> ScalerSettings:
    return ScalerSettings(
        max_replicas=spec.max_replicas,
        min_replicas=spec.min_replicas,
        metrics=tuple(MetricTarget(m.name, m.target) for m in spec.metrics),
        algorithm=spec.algorithm,
        stable_window=float(spec.windows.stable_seconds),
        panic_window=float(spec.windows.panic_seconds),
        panic_threshold=spec.panic_threshold,
        max_scale_up_rate=spec.max_scale_up_rate,
        max_scale_down_rate=spec.max_scale_down_rate,
        scale_up_tolerance=spec.scale_up_tolerance,
        scale_down_tolerance=spec.scale_down_tolerance,
        scale_up_cooldown=float(spec.cooldowns.scale_up_seconds),
        scale_down_cooldown=float(spec.cooldowns.scale_down_seconds),
        scale_to_zero_grace=float(spec.scale_to_zero_grace_seconds),
    )


def rfc3339(t: float) -> str:
    """Wall-clock seconds → RFC 3339 with milliseconds (sub-second times matter with short test windows)."""
    stamp = datetime.datetime.fromtimestamp(t, datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def parse_time(value: object) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def state_from_status(status: Mapping[str, Any] | None) -> ScalerState:
    status = status or {}
    panic_since = parse_time(status.get("panicSince"))
    return ScalerState(
        last_scale_time=parse_time(status.get("lastScaleTime")),
        last_busy_time=parse_time(status.get("lastActiveTime")),
        panic=PanicState(
            since=panic_since,
            last_trigger=parse_time(status.get("panicLastTriggerTime")) if panic_since is not None else None,
            floor=int(status.get("panicReplicas") or 0) if panic_since is not None else 0,
        ),
    )


def _state_fields(state: ScalerState) -> dict[str, Any]:
    def stamp(t: float | None) -> str | None:
        return rfc3339(t) if t is not None else None

    return {
        "lastScaleTime": stamp(state.last_scale_time),
        "lastActiveTime": stamp(state.last_busy_time),
        "panic": state.panic.active,
        "panicSince": stamp(state.panic.since),
        "panicLastTriggerTime": stamp(state.panic.last_trigger),
        "panicReplicas": state.panic.floor,
    }


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a tick could not decide or apply: a condition reason and message."""

    condition: str
    reason: str
    message: str


def _round(value: float) -> float:
    return float(f"{value:.4g}")


def metric_status(decision: Decision, settings: ScalerSettings, ready: int) -> list[dict[str, Any]]:
    out = []
    for m in settings.metrics:
        if m.name not in decision.values:
            continue
        total = decision.values[m.name]
        entry: dict[str, Any] = {"name": m.name, "total": _round(total), "target": m.target}
        if ready:
            entry["averageValue"] = _round(total / ready)
        if m.name in decision.per_metric:
            entry["desiredReplicas"] = decision.per_metric[m.name]
        out.append(entry)
    return out


def status(
    previous: Mapping[str, Any] | None,
    *,
    generation: int,
    now: str,
    current: int | None = None,
    ready: int = 0,
    decision: Decision | None = None,
    settings: ScalerSettings | None = None,
    state: ScalerState | None = None,
    problem: Problem | None = None,
    scaled: bool = False,
) -> dict[str, Any]:
    """The status after one tick: a decision (applied or not), or a problem that prevented one."""
    previous = previous or {}
    out: dict[str, Any] = {"observedGeneration": generation}
    updates: list[dict[str, Any]] = []
    if current is not None:
        out["currentReplicas"] = current
        out["readyReplicas"] = ready
    if decision is not None and settings is not None:
        out["desiredReplicas"] = decision.desired
        out["metrics"] = metric_status(decision, settings, ready)
        if decision.active:
            updates.append(condition(SCALING_ACTIVE, True, "ValidMetricFound", decision.reason, generation))
        else:
            updates.append(
                condition(SCALING_ACTIVE, False, "NoMetrics", "no metric had data this tick", generation)
            )
        if decision.limited:
            updates.append(condition(SCALING_LIMITED, True, decision.limited, decision.reason, generation))
        else:
            updates.append(
                condition(
                    SCALING_LIMITED,
                    False,
                    "DesiredWithinRange",
                    "the desired count is within range",
                    generation,
                )
            )
        if decision.held:
            updates.append(condition(ABLE_TO_SCALE, False, decision.held, decision.reason, generation))
        elif problem is None:
            reason = "SucceededRescale" if scaled else "ReadyForNewScale"
            message = decision.reason if scaled else "the target can be scaled"
            updates.append(condition(ABLE_TO_SCALE, True, reason, message, generation))
    if state is not None:
        out.update(_state_fields(state))
    if problem is not None:
        updates.append(condition(problem.condition, False, problem.reason, problem.message, generation))
        if problem.condition == ABLE_TO_SCALE and decision is None:
            updates.append(
                condition(SCALING_ACTIVE, False, problem.reason, "cannot read the target", generation)
            )
    out["conditions"] = merge_conditions(previous.get("conditions") or [], updates, now)
    return out
