"""From a solved plan to replicas and routing shares for a group of deployments, one per GPU type. No I/O.

The operator's ModelGroup controller runs these pieces once per tick, with the clock passed in:

* :class:`CounterWindow` — the gateways' size counter, scraped every tick, kept for ``window`` seconds: the
  workload is the counter's growth since the oldest kept scrape (at least ``window`` old once the window has
  filled), divided by the time between them. A fresh controller waits for a second scrape instead of
  planning on nothing.
* :class:`Stabilizer` — Kubernetes HPA's scale-down stabilisation, per member: the desired count is the
  *highest* count planned over the last ``seconds``. Scale-ups apply at once (an SLO is at stake);
  scale-downs wait until the lower plan has held for the whole window, so a workload that wobbles around a
  bucket edge, or two plans of equal cost that the solver alternates between, cannot flap replicas. When
  the workload moves from one type to another (short prompts → long ones), the new type scales up at once
  and the old one drains after the window: for that long the group pays for both, which is the price of
  never being under capacity while the routing shares move.
* :func:`clamp` — the member's own bounds, after stabilisation.
* :func:`routing_shares` — the plan's split as the gateways read it (only types with a share).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from optimizer.ilp import Plan
from optimizer.model import Grid, Workload
from optimizer.observed import Counts, workload_from_counts

__all__ = ["CounterWindow", "MemberBounds", "Stabilizer", "clamp", "gpu_summary", "routing_shares"]


@dataclass
class CounterWindow:
    """Scrapes of a cumulative per-bucket counter, and the rate between the oldest useful one and now."""

    window: float
    _samples: deque[tuple[float, dict[tuple[int, int], float]]] = field(default_factory=deque)

    def add(self, now: float, counts: Counts) -> None:
        self._samples.append((now, dict(counts)))
        # keep the newest sample that is at least ``window`` old (the base), drop the ones before it
        while len(self._samples) >= 2 and self._samples[1][0] <= now - self.window:
            self._samples.popleft()

    def workload(self, now: float, grid: Grid, model: str) -> Workload | None:
        """The rate per bucket since the base sample; None until two scrapes are some time apart."""
        if len(self._samples) < 2:
            return None
        start, before = self._samples[0]
        _, after = self._samples[-1]
        if now - start <= 0:
            return None
        return workload_from_counts(before, after, now - start, grid, model)

    @property
    def span(self) -> float:
        """Seconds between the oldest and the newest kept scrape."""
        return self._samples[-1][0] - self._samples[0][0] if len(self._samples) >= 2 else 0.0


@dataclass
class Stabilizer:
    """Per member: the highest recommendation of the last ``seconds`` (scale down late, scale up now)."""

    seconds: float
    _history: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)

    def desire(self, member: str, recommended: int, now: float, *, current: int | None = None) -> int:
        """The count to set; a member seen for the first time starts from ``current`` (what it has now), so
        an operator restart or a fail-over does not scale a group down before a full window."""
        history = self._history.get(member)
        if history is None:
            history = self._history[member] = deque()
            if current is not None and self.seconds > 0:
                history.append((now, current))
        history.append((now, recommended))
        while history and history[0][0] < now - self.seconds:
            history.popleft()
        return max(r for _, r in history)

    def forget(self, keep: set[str]) -> None:
        for name in set(self._history) - keep:
            del self._history[name]


@dataclass(frozen=True)
class MemberBounds:
    min_replicas: int
    max_replicas: int


def clamp(replicas: int, bounds: MemberBounds) -> int:
    return max(bounds.min_replicas, min(bounds.max_replicas, replicas))


def routing_shares(plan: Plan) -> dict[str, list[list[float]]]:
    """``{gpu type: shares[i][j]}`` for the types that serve some bucket (what a gateway routes by)."""
    return {
        gpu: [list(row) for row in matrix]
        for gpu, matrix in sorted(plan.split.items())
        if any(v > 0 for row in matrix for v in row)
    }


def gpu_summary(counts: Mapping[str, int]) -> str:
    """``l4=2 a100-80gb=1`` (printer column; stable order)."""
    return " ".join(f"{gpu}={n}" for gpu, n in sorted(counts.items()))
