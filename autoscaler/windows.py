"""A time window of samples: the moving average behind KPA's stable and panic windows.

Samples are kept with their timestamps and averaged per sample (not per second): the controller samples on a
fixed period, so the two are the same, and a missed tick (a failed scrape) simply leaves no sample instead of
counting as zero load.
"""

from __future__ import annotations

from collections import deque

__all__ = ["Window"]


class Window:
    """Samples of one metric over the last ``span`` seconds (older ones are dropped on ``add``)."""

    def __init__(self, span: float) -> None:
        self.span = span
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, now: float, value: float) -> None:
        self._samples.append((now, value))
        self._prune(now)

    def _prune(self, now: float) -> None:
        while self._samples and self._samples[0][0] <= now - self.span:
            self._samples.popleft()

    def average(self, now: float, span: float | None = None) -> float | None:
        """Mean of the samples in ``(now − span, now]`` (default: the whole window); None when there are none."""
        cutoff = now - (self.span if span is None else span)
        values = [v for t, v in self._samples if t > cutoff]
        return sum(values) / len(values) if values else None

    def __len__(self) -> int:
        return len(self._samples)
