"""Baseline policies the autoscalers are measured against: an HPA-like autoscaler and a fixed fleet.

**HPA-like** follows Kubernetes' HorizontalPodAutoscaler v2 (kubernetes.io, "Horizontal Pod Autoscaling";
shared/reference/autoscaling.md §3) on the metric a vLLM user would pick for it through a custom-metrics
adapter: average ``vllm:num_requests_running`` per pod.

* every ``sync_period`` (15 s) — between syncs the last decision stands;
* ``ratio = Σ running over ready pods ÷ (ready × target)``; within ``tolerance`` (0.1) of 1 nothing changes;
  pods still starting count as 0 for a scale-up (HPA's rule for unready pods) — they are in ``current``;
* ``proposal = ceil(current × ratio)`` where current = ready + starting pods;
* scale-up is limited to max(100 %, 4 pods) per sync period (the default ``scaleUp`` policies);
* scale-down takes the **highest** proposal of the last ``stabilization`` (300 s) — the default
  ``scaleDown.stabilizationWindowSeconds`` — and at most 100 % per period;
* ``min_replicas`` defaults to 1: scaling to zero needs the alpha ``HPAScaleToZero`` gate.

Its known weakness on LLM engines is the metric: running requests saturate at the engine's batch limit, so a
saturated pod reads as "a bit above target" however long its queue is.

**Fixed** is static provisioning for the peak: ``ceil(peak load ÷ capacity)`` engines all the time.

**Reactive** is the best a purely reactive autoscaler can do, as a bound rather than a product: no detection
delay and the *exact* current arrival rate (read from the trace, not measured), but no foresight — it wants
``ceil(rate(now) ÷ cap)`` engines at every tick and pays the cold start for each one it adds. Any causal policy
that sizes the fleet to the load it sees can only do worse on SLO at the same cost: it detects later or sizes
less exactly. (A policy can beat it on SLO only by holding engines the current load does not need — headroom,
paid in GPU-hours.)
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from flotilla.cli.local_scaler import Decision, Observation


@dataclass
class HpaLike:
    target: float
    min_replicas: int = 1
    max_replicas: int = 1000
    sync_period: float = 15.0
    stabilization: float = 300.0
    tolerance: float = 0.1
    _last_sync: float | None = None
    _desired: int | None = None
    _history: deque[tuple[float, int]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        if not self.target > 0:
            raise ValueError(f"HPA target must be > 0, got {self.target}")

    def decide(self, obs: Observation) -> Decision:
        current = obs.ready + obs.starting
        if self._desired is None:
            self._desired = max(current, self.min_replicas)
        if self._last_sync is not None and obs.now - self._last_sync < self.sync_period:
            return Decision(self._desired)
        self._last_sync = obs.now
        total = float(sum(obs.running))
        proposal = current
        if current == 0:
            proposal = 1 if obs.demand > 0 else 0
        elif obs.ready > 0:
            ratio = total / (obs.ready * self.target)
            if ratio > 1 + self.tolerance:
                # pods still starting count as 0 for a scale-up; if that brings the ratio within tolerance,
                # nothing changes (HPA's conservative rule)
                up_ratio = total / (current * self.target)
                proposal = math.ceil(current * up_ratio) if up_ratio > 1 + self.tolerance else current
            elif ratio < 1 - self.tolerance:
                proposal = math.ceil(obs.ready * ratio)
        proposal = max(self.min_replicas, min(self.max_replicas, proposal))
        self._history.append((obs.now, proposal))
        while self._history and self._history[0][0] < obs.now - self.stabilization:
            self._history.popleft()
        if proposal > self._desired:
            desired = min(proposal, max(2 * self._desired, self._desired + 4))
        else:
            # the highest recommendation of the stabilisation window (100 % per period may go at once)
            desired = min(self._desired, max(p for _, p in self._history))
        self._desired = max(self.min_replicas, min(self.max_replicas, desired))
        return Decision(self._desired, detail={"avg_running": total / obs.ready if obs.ready else 0.0})


@dataclass
class Fixed:
    replicas: int

    def decide(self, obs: Observation) -> Decision:
        return Decision(self.replicas)


@dataclass
class Reactive:
    """The reactive bound (see the module docstring); ``rate(t)`` is the trace's arrival rate at trace time t."""

    rate: Callable[[float], float]
    cap: float
    min_replicas: int = 0

    def decide(self, obs: Observation) -> Decision:
        want = math.ceil(self.rate(obs.now) / self.cap - 1e-9)
        return Decision(max(self.min_replicas, want), detail={"rate": self.rate(obs.now)})
