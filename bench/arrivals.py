"""Open-loop arrival schedules.

Requests are sent at *scheduled* times drawn up front, whatever the system under test is doing, and every
latency is measured from the scheduled time rather than from when the client got round to sending. A
closed-loop client (send the next request when one finishes) slows down exactly when the server does and so
hides queueing — "coordinated omission". Open-loop Poisson arrivals are what the published router benchmarks
use (inference-perf ``load.type: poisson``, ``sglang.bench_serving --request-rate``).
"""

from __future__ import annotations

import random


def poisson_schedule(count: int, rate: float, *, seed: int) -> list[float]:
    """Send offsets (seconds from start) of ``count`` Poisson arrivals at ``rate`` requests/s.

    Inter-arrival gaps are i.i.d. exponential with mean 1/rate; the first request goes at t = 0 so a run's
    length is the sum of ``count`` − 1 gaps (expected (count − 1)/rate).
    """
    if count < 0:
        raise ValueError(f"request count must be >= 0, got {count}")
    if not rate > 0:
        raise ValueError(f"request rate must be > 0 requests/s, got {rate}")
    rng = random.Random(seed)
    offsets: list[float] = []
    t = 0.0
    for i in range(count):
        if i:
            t += rng.expovariate(rate)
        offsets.append(t)
    return offsets


def uniform_schedule(count: int, rate: float) -> list[float]:
    """Evenly spaced offsets at ``rate`` requests/s (a deterministic control)."""
    if count < 0:
        raise ValueError(f"request count must be >= 0, got {count}")
    if not rate > 0:
        raise ValueError(f"request rate must be > 0 requests/s, got {rate}")
    return [i / rate for i in range(count)]
