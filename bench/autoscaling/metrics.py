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

import math
from collections.abc import Sequence
from dataclasses import dataclass



@dataclass(frozen=True)
class EngineSpan:
    """One engine's life on the trace clock (simulated seconds; None = not reached)."""

    started: float
    ready: float | None
    stopped: float | None


@dataclass(frozen=True)
class Served:
    """One request on the trace clock: when it was due and its TTFT (simulated seconds; inf = failed)."""

    at: float
    ttft: float


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
    """Nearest-rank p90, so a failed request (inf) is a rank like any other."""
    data = sorted(values)
    return data[max(0, math.ceil(0.9 * len(data)) - 1)]


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
    for (_, a), (t, b) in zip(desired, desired[1:], strict=False):
        if b == a:
            continue
        changes += 1
        direction = 1 if b > a else -1
        if last is not None and last[1] != direction and t - last[0] <= reversal_window:
            reversals += 1
        last = (t, direction)
    return changes, reversals


def ttft_p90(served: Sequence[Served]) -> float:
    return _p90([r.ttft for r in served]) if served else math.nan
