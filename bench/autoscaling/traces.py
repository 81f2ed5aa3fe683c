"""Load traces for the autoscaling suite, in units of one engine's capacity at the SLO.

A trace is a piecewise function ``level(t)`` (simulated seconds → multiples of ``cap``, the request rate one
engine sustains within the SLO, measured by :mod:`bench.autoscaling.capacity`), so the same shapes load any
engine configuration to the same number of engines. Arrivals are a non-homogeneous Poisson process drawn by
thinning (Lewis & Shedler): candidates at the peak rate, each kept with probability rate(t) ÷ peak. Seeded,
so every contender replays the identical arrival times.

The four shapes of the issue:

* ``step``    — a sudden 1 → 4 engines' worth of load, held, then back (scale-up speed; the HPA-like
  baseline's 5-minute scale-down stabilisation shows after the drop);
* ``burst``   — a one-minute spike to 5× on a base of 1 (panic mode; not worth a cold start afterwards);
* ``diurnal`` — a smooth ramp 0.5 → 4.5 → 0.5 (a compressed day: tracking without overshoot);
* ``quiet``   — load, then nothing for 6 minutes, then load again (scale to zero and the cold start back).
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
    return Trace("step", "1 engine's load for 2 min, a step to 4× for 6 min, back to 1× for 7 min", 900.0,
                 _piecewise((0, 1.0), (120, 4.0), (480, 1.0)), steps=(120.0,))  # fmt: skip


def burst() -> Trace:
    return Trace("burst", "1 engine's load with a one-minute burst to 5× at 3 min, 10 min in all", 600.0,
                 _piecewise((0, 1.0), (180, 5.0), (240, 1.0)), steps=(180.0,))  # fmt: skip


def diurnal() -> Trace:
    def level(t: float) -> float:
        return 0.5 + 4.0 * math.sin(math.pi * t / 900.0) ** 2

    return Trace("diurnal", "a compressed day: 0.5 → 4.5 → 0.5 engines' load as sin² over 15 min", 900.0, level)


def quiet() -> Trace:
    return Trace("quiet", "2× load for 3 min, 6 min of silence, 2× again for 3 min", 720.0,
                 _piecewise((0, 2.0), (180, 0.0), (540, 2.0)), steps=(540.0,))  # fmt: skip


TRACES: dict[str, Callable[[], Trace]] = {"step": step, "burst": burst, "diurnal": diurnal, "quiet": quiet}


def scaled(trace: Trace, factor: float) -> Trace:
    """The same shape ``factor`` times shorter (quick runs); step times scale with it."""
    if not factor > 0:
        raise ValueError(f"time factor must be > 0, got {factor}")
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
