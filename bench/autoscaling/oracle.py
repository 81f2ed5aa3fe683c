"""The perfect-foresight oracle: the fewest GPU-seconds that meet the SLO, given the cold-start time.

With ``cap`` = requests/s one engine serves within the SLO (measured, :mod:`bench.autoscaling.capacity`), the
trace needs ``n(u) = max(min_replicas, ceil(rate(u) ÷ cap))`` engines *ready* at time u. An engine is charged
from its start, cold start ``L`` included, until it stops (shared/reference/autoscaling.md §7).

Minimal cost, level by level: the k-th engine is needed exactly on the intervals where ``n(u) ≥ k``. For each
such interval [a, b) it must start at a − L and may stop at b. Between two intervals with a gap g it is
cheaper to keep it running when g ≤ L (paying g) than to stop and start again (paying L). Levels are
independent, so the sum over levels of these per-level costs is the minimum. Engines needed at the start of
the trace are warm (every contender starts with the engines the first second needs, already ready).

The reference's shorthand ``ceil(demand(t + L) ÷ cap)`` is the same schedule only while demand rises; on a
falling edge it would stop engines that are still serving, so it is not used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.autoscaling.traces import Trace
from flotilla.cli.local_scaler import Decision, Observation

#: a rate within this fraction above a multiple of cap still counts as that many engines (float noise)
_EPS = 1e-9


def needed(trace: Trace, cap: float, *, min_replicas: int = 0, dt: float = 1.0) -> list[int]:
    """Ready engines needed in each ``dt`` slot of the trace."""
    slots = math.ceil(trace.duration / dt)
    return [max(min_replicas, math.ceil(trace.rate(i * dt, cap) / cap - _EPS)) for i in range(slots)]


@dataclass(frozen=True)
class OracleSchedule:
    """Per level k (1-based), the [start, stop) intervals of the k-th engine, in simulated seconds."""

    intervals: tuple[tuple[tuple[float, float], ...], ...]
    duration: float

    def alive(self, t: float) -> int:
        """Engines running (starting or ready) at ``t``."""
        return sum(1 for level in self.intervals for a, b in level if a <= t < b)

    @property
    def gpu_seconds(self) -> float:
        return sum(b - a for level in self.intervals for a, b in level)

    @property
    def peak(self) -> int:
        return len(self.intervals)


def schedule(
    trace: Trace, cap: float, cold_start: float, *, min_replicas: int = 0, dt: float = 1.0
) -> OracleSchedule:
    need = needed(trace, cap, min_replicas=min_replicas, dt=dt)
    levels = []
    for k in range(1, max(need, default=0) + 1):
        spans: list[tuple[float, float]] = []
        start: float | None = None
        for i, n in enumerate([*need, 0]):
            if n >= k and start is None:
                start = i * dt
            elif n < k and start is not None:
                spans.append((start, min(i * dt, trace.duration)))
                start = None
        merged: list[tuple[float, float]] = []
        for a, b in spans:
            begin = max(0.0, a - cold_start) if a > 0 else 0.0
            if merged and a - merged[-1][1] <= cold_start:
                merged[-1] = (merged[-1][0], b)
            else:
                merged.append((begin, b))
        levels.append(tuple(merged))
    return OracleSchedule(tuple(levels), trace.duration)


@dataclass
class OraclePolicy:
    """Replays an :class:`OracleSchedule` through the local scaler (to check that it really meets the SLO);
    ``obs.now`` must be on the trace's clock."""

    plan: OracleSchedule

    def decide(self, obs: Observation) -> Decision:
        return Decision(self.plan.alive(obs.now))
