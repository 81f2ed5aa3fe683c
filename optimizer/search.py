"""Finding the highest request rate an engine sustains within an SLO: a pure search over load probes.

A probe runs Poisson arrivals of one request size at one rate and reports the share of requests that attained
the SLO. Attainment falls (nearly) monotonically with the rate, so the search is: double the rate from
``start`` until a probe fails, then bisect between the last pass and the first fail until they are within
``rel_tol`` of each other (or the ``ceiling`` passes); the answer is the last *passing* rate (never an interpolation, so the profile only
contains rates that were actually seen to meet the SLO). If even ``floor`` fails, the answer is 0: this GPU
type cannot serve the bucket within the SLO at any useful rate.

The search is a state machine (``next_rate`` / ``observe``), so one implementation serves both the offline
simulated probes (synchronous, microseconds of bookkeeping) and HTTP probes against a live engine (async).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from optimizer.model import Slo


def attainment(slo: Slo, outcomes: Iterable[tuple[float | None, float | None]]) -> float:
    """Share of ``(ttft, tpot)`` outcomes that meet ``slo`` (a missing value, e.g. unfinished, misses)."""
    total = met = 0
    for ttft, tpot in outcomes:
        total += 1
        met += slo.met(ttft, tpot)
    return met / total if total else 0.0


@dataclass
class RateSearch:
    """Doubling then bisection over rates; ``done`` when the bracket is tight or the probe budget is spent."""

    target: float
    start: float = 1.0
    floor: float = 0.01
    ceiling: float = 10_000.0
    rel_tol: float = 0.05
    max_probes: int = 24
    passed: float = 0.0
    failed: float | None = None
    probes: list[tuple[float, float]] = field(default_factory=list)

    def next_rate(self) -> float | None:
        """The next rate to probe, or ``None`` when the search is over (read :attr:`result`)."""
        if len(self.probes) >= self.max_probes:
            return None
        if self.failed is None:
            if not self.probes:
                return self.start
            if self.passed >= self.ceiling:
                return None  # "at least the ceiling": enough for any workload it is asked about
            return min(self.passed * 2, self.ceiling)
        if self.passed == 0.0:
            # even the first probe failed: walk down to the floor before giving up
            lowest = min(r for r, _ in self.probes)
            if lowest <= self.floor:
                return None
            return max(self.floor, lowest / 4)
        if self.failed - self.passed <= self.rel_tol * self.passed:
            return None
        return (self.passed + self.failed) / 2

    def observe(self, rate: float, share: float) -> None:
        self.probes.append((rate, share))
        if share >= self.target:
            self.passed = max(self.passed, rate)
        else:
            self.failed = rate if self.failed is None else min(self.failed, rate)
        if self.failed is not None and self.passed >= self.failed:
            # non-monotonic noise: a higher rate passed after a lower one failed; trust the failure
            self.passed = max(
                (r for r, s in self.probes if s >= self.target and r < self.failed), default=0.0
            )

    @property
    def result(self) -> float:
        return self.passed
