"""A load probe on a simulated GPU: engine_sim's scheduler in pure simulated time (no HTTP, no wall clock).

It lives with the CLI because it is wiring: the optimizer (``optimizer.profiling.LoadProbe``) must not import
the simulator, and the simulator knows nothing of SLOs. ``flotilla profile --preset`` and the ``optimizer``
bench use it; both get exactly the timings a served engine_sim of that preset would report, in a fraction of
the time (docs/optimizer.md).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from engine_sim import Arrival, EngineConfig, Outcome, replay
from optimizer import LoadProbe, Outcomes, Slo


def poisson(rate: float, count: int, rng: random.Random, start: float = 0.0) -> list[float]:
    out, t = [], start
    for _ in range(count):
        t += rng.expovariate(rate)
        out.append(t)
    return out


def deadline(slos: Sequence[Slo], output: int) -> float:
    """Simulated seconds after its arrival by which a request meeting any of ``slos`` has finished."""
    worst = 0.0
    for s in slos:
        worst = max(worst, (s.ttft or 600.0) + (s.tpot or 10.0) * max(0, output - 1))
    return worst


def simulated_probe(preset: str, slos: Sequence[Slo], *, seed: int = 0) -> LoadProbe:
    """A :data:`LoadProbe` on one engine_sim engine of ``preset`` (prefix caching off: prompts are unique)."""
    config = EngineConfig(preset=preset, enable_prefix_caching=False, seed=seed)

    async def probe(prompt: int, output: int, rate: float, requests: int) -> Outcomes:
        rng = random.Random(hash((seed, prompt, output, rate)) & 0xFFFFFFFF)
        times = poisson(rate, requests, rng)
        arrivals = [Arrival(t, prompt, output) for t in times]
        return served(replay(config, arrivals, horizon=times[-1] + deadline(slos, output), seed=seed))

    return probe


def served(outcomes: Sequence[Outcome]) -> Outcomes:
    """``(ttft, tpot)`` per request; an unfinished request has no TPOT (it cannot have met the SLO)."""
    return [(o.ttft, o.tpot if o.finished else None) for o in outcomes]
