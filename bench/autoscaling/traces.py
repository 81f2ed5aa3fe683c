"""Load traces for the autoscaling suite, in units of one engine's capacity at the SLO.

A trace is a piecewise function ``level(t)`` (simulated seconds → multiples of ``cap``, the request rate one
engine sustains within the SLO, measured by :mod:`bench.autoscaling.capacity`), so the same shapes load any
engine configuration to the same number of engines. Arrivals are a non-homogeneous Poisson process drawn by
thinning (Lewis & Shedler): candidates at the peak rate, each kept with probability rate(t) ÷ peak. Seeded,
so every contender replays the identical arrival times.

The four shapes of the issue:

* ``step``    — a sudden 1 → 3 engines' worth of load, held, then back (scale-up speed; the HPA-like
  baseline's 5-minute scale-down stabilisation shows after the drop);
* ``burst``   — a 45-second spike to 3× on a base of 1 (panic mode; shorter than a cold start);
* ``diurnal`` — a smooth ramp 0.5 → 3 → 0.5 (a compressed day: tracking without overshoot);
* ``quiet``   — load, then nothing for 3 minutes, then load again (scale to zero and the cold start back).

Peaks are kept at 3 engines and the traces at 4.5–7 simulated minutes because every simulated engine-second
costs CPU (about 7 ms of one core per busy engine-second, see docs/benchmarks.md) on a 2-core machine.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

Level = Callable[[float], float]


@dataclass(frozen=True)
class Trace:
    name: str
    description: str
    duration: float  # simulated seconds
    level: Level  # multiples of one engine's capacity
    #: times (simulated seconds) where load steps up, for the step-to-ready metric
    steps: tuple[float, ...] = ()

    def rate(self, t: float, cap: float) -> float:
        return max(0.0, self.level(t)) * cap

    def peak(self, resolution: float = 1.0) -> float:
        n = int(self.duration / resolution) + 1
        return max(self.level(i * resolution) for i in range(n))


def _piecewise(*segments: tuple[float, float]) -> Level:
    """``segments`` = (start time, level) in increasing start order; the level holds until the next start."""

    def level(t: float) -> float:
        value = 0.0
        for start, lvl in segments:
            if t >= start:
                value = lvl
        return value

    return level


def step() -> Trace:
    return Trace("step", "1 engine's load for 1 min, a step to 3× for 2.5 min, back to 1× for 3 min", 390.0,
                 _piecewise((0, 1.0), (60, 3.0), (210, 1.0)), steps=(60.0,))  # fmt: skip


def burst() -> Trace:
    return Trace("burst", "1 engine's load with a 45-second burst to 3× at 1.5 min, 4.5 min in all", 270.0,
                 _piecewise((0, 1.0), (90, 3.0), (135, 1.0)), steps=(90.0,))  # fmt: skip


def diurnal() -> Trace:
    def level(t: float) -> float:
        return 0.5 + 2.5 * math.sin(math.pi * t / 420.0) ** 2

    return Trace("diurnal", "a compressed day: 0.5 → 3 → 0.5 engines' load as sin² over 7 min", 420.0, level)


def quiet() -> Trace:
    return Trace("quiet", "1.5× load for 1.5 min, 3 min of silence, 1.5× again for 2 min", 390.0,
                 _piecewise((0, 1.5), (90, 0.0), (270, 1.5)), steps=(270.0,))  # fmt: skip


TRACES: dict[str, Callable[[], Trace]] = {"step": step, "burst": burst, "diurnal": diurnal, "quiet": quiet}


def scaled(trace: Trace, factor: float) -> Trace:
    """The same shape ``factor`` times shorter (quick runs); step times scale with it."""
    if not factor > 0:
        raise ValueError(f"time factor must be > 0, got {factor}")
    if factor == 1.0:
        return trace
    return Trace(trace.name, trace.description + f" (time ÷ {factor:g})", trace.duration / factor,
                 lambda t: trace.level(t * factor), tuple(s / factor for s in trace.steps))  # fmt: skip


def arrivals(trace: Trace, cap: float, *, seed: int) -> list[float]:
    """Arrival times (simulated seconds) of a Poisson process with rate ``trace.rate(t, cap)``, by thinning."""
    if not cap > 0:
        raise ValueError(f"capacity must be > 0 requests/s, got {cap}")
    peak = trace.peak() * cap
    if peak <= 0:
        return []
    rng = random.Random(seed)
    out: list[float] = []
    t = 0.0
    while True:
        t += rng.expovariate(peak)
        if t >= trace.duration:
            return out
        if rng.random() * peak <= trace.rate(t, cap):
            out.append(t)
