"""A plan run on a *served* simulated fleet: ``flotilla sim`` processes over HTTP, one per GPU type.

The offline validation (:mod:`bench.gpu_mix.validate`) replays each replica's arrivals through engine_sim's
scheduler in-process. This runs the same dispatch against real engine_sim servers — one process per GPU
type with the plan's count of engines, time-scaled — sending non-streaming ``/v1/completions`` (token-id
prompts, ``ignore_eos``) at each request's arrival time, and scores the engines' simulated timings
(``x-sim-ttft``, ``x-sim-tpot``). It is slower and costs CPU, so the full suite runs it for a few cases only;
agreement with the offline attainment is what the report shows.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence

import httpx
import orjson

from bench.fleet import Fleet, FleetSpec
from bench.gpu_mix.validate import Matrix, Request, dispatch
from optimizer import Grid, Slo, attainment


async def _send(
    client: httpx.AsyncClient, url: str, req: Request, start: float, time_scale: float, first: int
) -> tuple[float, tuple[float | None, float | None]]:
    delay = start + req.at * time_scale - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)
    ids = [first, *range(1000, 1000 + req.prompt - 1)]  # unique prompts: no prefix-cache hits across requests
    body = orjson.dumps({"model": "m", "prompt": ids, "max_tokens": req.output, "ignore_eos": True})
    try:
        r = await client.post(
            url + "/v1/completions", content=body, headers={"content-type": "application/json"}
        )
        if r.status_code != 200:
            return req.at, (None, None)
        tpot = float(r.headers.get("x-sim-tpot", "0"))
        return req.at, (float(r.headers["x-sim-ttft"]), tpot)
    except (httpx.HTTPError, KeyError, ValueError):
        return req.at, (None, None)


async def run_live(
    requests: Sequence[Request], grid: Grid, counts: Mapping[str, int], split: Mapping[str, Matrix],
    caps: Mapping[str, Matrix], slo: Slo, *, time_scale: float = 0.25, warmup: float = 0.1,
) -> float:  # fmt: skip
    """SLO attainment of ``requests`` dispatched by the plan onto served engine_sim fleets."""
    fleets: dict[str, Fleet] = {}
    try:
        for gpu, n in counts.items():
            if n:
                spec = FleetSpec(engines=n, model="m", preset=f"{gpu}-llama3-8b", time_scale=time_scale,
                                 extra_args=("--no-prefix-caching",))  # fmt: skip
                fleets[gpu] = await Fleet.start(spec)
        routed = dispatch(requests, grid, counts, split, caps)
        rng = random.Random(7)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=512)
        async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits, trust_env=False) as client:
            start = time.perf_counter() + 1.0
            tasks = []
            for (gpu, replica), reqs in routed.items():
                url = fleets[gpu].urls[replica]
                tasks += [
                    _send(client, url, req, start, time_scale, rng.randrange(1000, 30_000)) for req in reqs
                ]
            results = await asyncio.gather(*tasks)
    finally:
        for fleet in fleets.values():
            fleet.stop()
    scored_from = requests[int(len(requests) * warmup)].at if requests else 0.0
    return attainment(slo, [o for at, o in results if at >= scored_from])
