"""What the autoscaling suite reports, computed from records (pure, unit-tested).

* **GPU-seconds** — Σ over engines of the time each was running inside the trace window (start to stop,
  cold start included; one GPU per engine). Reported ÷ the oracle's.
* **SLO attainment** — the fraction of trace minutes (with at least one request) whose TTFT p90 is within
  the SLO; a failed request counts as an infinite TTFT.
* **Step-to-ready** — per load step, the time from the step to the first engine that became ready after it.
* **Scale events** — changes of the desired count, and reversals (a change opposite to the previous one
  within ``reversal_window``): flapping shows here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class EngineSpan:
    """One engine's life on the trace clock (simulated seconds; None = not reached): started, ready (joined
    the gateway), stopping (left the gateway), stopped."""

    started: float
    ready: float | None
    stopped: float | None
    stopping: float | None = None

    def serving(self, t: float) -> bool:
        leaves = self.stopping if self.stopping is not None else self.stopped
        return self.ready is not None and self.ready <= t and (leaves is None or t < leaves)


@dataclass(frozen=True)
class Served:
    """One request on the trace clock: when it was due, its TTFT and its end-to-end time (simulated seconds;
    inf = failed)."""

    at: float
    ttft: float
    e2e: float = math.inf


def with_hold(served: Sequence[Served], spans: Sequence[EngineSpan]) -> list[Served]:
    """Add to each request's TTFT the time the gateway held it: from its arrival, if no engine was serving,
    until the next engine became ready."""
    out = []
    for r in served:
        hold = 0.0
        if not any(s.serving(r.at) for s in spans):
            later = [s.ready for s in spans if s.ready is not None and s.ready > r.at]
            hold = min(later) - r.at if later else math.inf
        out.append(Served(r.at, r.ttft + hold, r.e2e + hold))
    return out


def gpu_seconds(spans: Sequence[EngineSpan], duration: float) -> float:
    total = 0.0
    for s in spans:
        end = duration if s.stopped is None else min(s.stopped, duration)
        total += max(0.0, end - max(0.0, s.started))
    return total


def minute_attainment(served: Sequence[Served], slo_ttft: float, duration: float) -> tuple[float, int, int]:
    """(fraction of minutes within the SLO, good minutes, minutes with requests)."""
    minutes = math.ceil(duration / 60.0)
    buckets: list[list[float]] = [[] for _ in range(minutes)]
    for r in served:
        i = int(r.at // 60.0)
        if 0 <= i < minutes:
            buckets[i].append(r.ttft)
    counted = [b for b in buckets if b]
    good = sum(1 for b in counted if _p90(b) <= slo_ttft)
    return (good / len(counted) if counted else math.nan), good, len(counted)


def _p90(values: list[float]) -> float:
    return _quantile(values, 0.9)


def _quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile, so a failed request (inf) is a rank like any other."""
    data = sorted(values)
    return data[max(0, math.ceil(q * len(data)) - 1)]


def step_to_ready(spans: Sequence[EngineSpan], steps: Sequence[float]) -> list[float]:
    """Per step time s: min(ready − s) over engines that became ready at or after s (nan: none did)."""
    out = []
    for s in steps:
        after = [e.ready - s for e in spans if e.ready is not None and e.ready >= s]
        out.append(min(after) if after else math.nan)
    return out


def scale_events(desired: Sequence[tuple[float, int]], reversal_window: float = 120.0) -> tuple[int, int]:
    """(changes of the desired count, reversals within ``reversal_window`` seconds)."""
    changes = 0
    reversals = 0
    last: tuple[float, int] | None = None  # (time, direction) of the previous change
    for (_, a), (t, b) in itertools.pairwise(desired):
        if b == a:
            continue
        changes += 1
        direction = 1 if b > a else -1
        if last is not None and last[1] != direction and t - last[0] <= reversal_window:
            reversals += 1
        last = (t, direction)
    return changes, reversals


def ttft_p90(served: Sequence[Served]) -> float:
    return ttft_quantile(served, 0.9)


def ttft_quantile(served: Sequence[Served], q: float) -> float:
    return _quantile([r.ttft for r in served], q) if served else math.nan
