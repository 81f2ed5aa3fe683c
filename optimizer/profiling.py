"""Profiling one GPU type: for every size bucket and SLO, the highest request rate one engine sustains.

The engine is behind a :class:`LoadProbe`: given a request size, a rate and a request count, it runs that
open-loop Poisson load and returns each request's ``(ttft, tpot)`` (``None`` where the request did not get
that far). Two probes exist: HTTP against a live engine (:mod:`optimizer.live_probe`, real vLLM or
engine_sim) and engine_sim's scheduler in pure simulated time (wired by ``flotilla profile --preset`` and the
bench, since the optimizer does not import the simulator).

Choices that keep a profile honest and cheap:

* every bucket is probed at its **upper** bounds (a request of any size in the bucket does no worse);
* the first ``warmup`` share of a probe's requests are not scored (they meet an empty engine);
* a probe offers load for at least ``min_seconds`` and at least ``settle`` times a request's duration (the
  median measured by the bucket's previous probe; before that, the longest the SLO allows), so the engine
  reaches its steady state (a full batch, a standing queue, a full KV cache) before the probe ends;
* a rate is never judged on fewer requests than that window needs: rates are searched up to
  ``min(ceiling, max_requests / window)``, and a profile entry equal to that cap means "at least" (a short
  burst that fits in one batch would otherwise pass at any rate);
* searches start from a neighbouring bucket's answer (larger requests never sustain *more*), which saves
  most of the doubling probes;
* probes are cached per (bucket, rate), so several SLOs share the load runs they have in common.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence

from optimizer.model import Grid, Profile, ProfileTable, Slo
from optimizer.search import RateSearch, attainment

Outcomes = list[tuple[float | None, float | None]]
#: (prompt tokens, output tokens, rate req/s, requests) -> per-request (ttft, tpot)
LoadProbe = Callable[[int, int, float, int], Awaitable[Outcomes]]
#: progress callback: (input bound, output bound, slo, rate, attainment)
Report = Callable[[int, int, Slo, float, float], None]


def probe_size(rate: float, seconds: float, *, min_requests: int, max_requests: int) -> int:
    return max(min_requests, min(max_requests, math.ceil(rate * seconds)))


def slo_duration(slos: Sequence[Slo], output: int) -> float:
    """The longest a request of ``output`` tokens may take within any of ``slos`` (ttft + tpot × rest)."""
    return max((s.ttft or 0.0) + (s.tpot or 0.0) * max(0, output - 1) for s in slos)


def median_duration(outcomes: Outcomes, output: int) -> float | None:
    """Median end-to-end time of the requests that got a TTFT and a TPOT."""
    spans = sorted(t + p * max(0, output - 1) for t, p in outcomes if t is not None and p is not None)
    return spans[len(spans) // 2] if spans else None


async def profile_gpu(
    probe: LoadProbe,
    grid: Grid,
    slos: Sequence[Slo],
    *,
    gpu: str,
    engine: str = "",
    model: str = "",
    min_requests: int = 60,
    max_requests: int = 2000,
    min_seconds: float = 30.0,
    settle: float = 3.0,
    ceiling: float = 200.0,
    warmup: float = 0.1,
    rel_tol: float = 0.05,
    report: Report | None = None,
) -> Profile:
    """One table per SLO; see the module docstring for how probes are sized."""
    cache: dict[tuple[int, int, float], Outcomes] = {}
    #: measured median request duration per bucket (until measured: the SLO's bound, an overestimate)
    duration: dict[tuple[int, int], float] = {}

    def window(prompt: int, output: int) -> float:
        return max(min_seconds, settle * duration.get((prompt, output), slo_duration(slos, output)))

    async def run(prompt: int, output: int, rate: float) -> Outcomes:
        key = (prompt, output, rate)
        if key not in cache:
            n = probe_size(rate, window(prompt, output), min_requests=min_requests, max_requests=max_requests)
            outcomes = await probe(prompt, output, rate, n)
            cache[key] = outcomes[int(len(outcomes) * warmup) :]
            measured = median_duration(cache[key], output)
            if measured is not None:
                duration[prompt, output] = max(measured, duration.get((prompt, output), 0.0))
        return cache[key]

    tables = []
    rows, cols = grid.shape
    for slo in slos:
        found = [[0.0] * cols for _ in range(rows)]
        for i, prompt in enumerate(grid.input_bounds):
            for j, output in enumerate(grid.output_bounds):
                known = [found[i - 1][j]] if i else []
                known += [found[i][j - 1]] if j else []
                if known and min(known) == 0.0:
                    continue  # a smaller request size already cannot meet the SLO
                search = RateSearch(target=slo.attainment, rel_tol=rel_tol, ceiling=ceiling)
                search.start = min(min(known) if known else 1.0, ceiling)
                while True:
                    # a rate is only judged on a full window: beyond max_requests per window, stop at "at least"
                    search.ceiling = min(ceiling, max_requests / window(prompt, output))
                    search.start = min(search.start, search.ceiling)
                    if (rate := search.next_rate()) is None:
                        break
                    share = attainment(slo, await run(prompt, output, rate))
                    search.observe(rate, share)
                    if report is not None:
                        report(prompt, output, slo, rate, share)
                found[i][j] = search.result
        tables.append(ProfileTable(slo=slo, max_rate=tuple(tuple(r) for r in found)))
    return Profile(
        gpu=gpu,
        engine=engine,
        model=model,
        input_bounds=grid.input_bounds,
        output_bounds=grid.output_bounds,
        tables=tuple(tables),
    )
