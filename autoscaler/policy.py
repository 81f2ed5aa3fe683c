"""The contract between the scaler and a scaling policy (KPA, APA): pure functions of windowed load.

A policy sees, per metric, the fleet-total load averaged over the stable and the panic window, the target's
replicas and the ready pods, and the panic state the scaler persists for it; it returns the replicas it wants
before bounds, cooldowns and scale-to-zero (the scaler's job, identical for every policy). Policies hold no
state of their own: whatever must survive a tick — or an operator restart — goes through ``PanicState``.

Shared arithmetic lives here so both policies round and clamp the same way:

* ``pods_for(load, target) = ceil(load ÷ target)``, with a 1e-9 slack so 4.0000000001 is 4 pods, not 5;
* ``within_tolerance``: per-pod load ÷ target inside ``[1 − down_tol, 1 + up_tol]`` keeps the current count
  (HPA's and AIBrix's dead band: without it a load hovering at a boundary flips the count every tick);
* ``rate_bounds``: one decision moves at most to ``ceil(up_rate × max(current, 1))`` and at least to
  ``floor(current ÷ down_rate)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

from autoscaler.settings import ScalerSettings

__all__ = [
    "MetricLoad",
    "PanicState",
    "PolicyInput",
    "PolicyResult",
    "ScalingPolicy",
    "pods_for",
    "rate_bounds",
    "within_tolerance",
]


@dataclass(frozen=True, slots=True)
class MetricLoad:
    """One metric's fleet-total load averaged over the windows (None: no sample in that window)."""

    name: str
    target: float
    stable: float | None
    panic: float | None


@dataclass(frozen=True, slots=True)
class PanicState:
    """KPA's panic mode, persisted by the scaler between ticks and across restarts."""

    #: when panic mode was entered (None: not in panic)
    since: float | None = None
    #: last time the panic condition held; panic ends a full stable window after it
    last_trigger: float | None = None
    #: the largest count decided while in panic (panic never scales down below it)
    floor: int = 0

    @property
    def active(self) -> bool:
        return self.since is not None


@dataclass(frozen=True, slots=True)
class PolicyInput:
    now: float
    #: replicas the target has (its spec, including pods still starting)
    current: int
    #: pods that answered the scrape
    ready: int
    metrics: tuple[MetricLoad, ...]
    settings: ScalerSettings
    panic: PanicState = field(default_factory=PanicState)


@dataclass(frozen=True, slots=True)
class PolicyResult:
    #: replicas wanted, before min/max bounds, cooldowns and scale-to-zero; None: no metric had data
    desired: int | None
    #: metric name → replicas that metric alone wants (before the rate bounds)
    per_metric: dict[str, int]
    panic: PanicState = field(default_factory=PanicState)


class ScalingPolicy(Protocol):
    """A scaling algorithm, registered by name in ``autoscaler.registry``."""

    name: str

    def recommend(self, inputs: PolicyInput) -> PolicyResult: ...


def pods_for(load: float, target: float) -> int:
    return max(0, math.ceil(load / target - 1e-9))


def within_tolerance(load: float, target: float, pods: int, settings: ScalerSettings) -> bool:
    if pods <= 0:
        return False
    ratio = load / (pods * target)
    return 1 - settings.scale_down_tolerance <= ratio <= 1 + settings.scale_up_tolerance


def rate_bounds(current: int, settings: ScalerSettings) -> tuple[int, int]:
    low = math.floor(current / settings.max_scale_down_rate)
    high = math.ceil(settings.max_scale_up_rate * max(current, 1))
    return low, max(high, current)


def clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))
