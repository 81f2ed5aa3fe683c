"""The workload as the gateway saw it: two scrapes of its request-size counter, a window apart.

``flotilla_gateway_request_sizes_total`` (contract: :mod:`flotilla.sizes`) counts finished requests per model
and (prompt, output) bucket; the difference between two scrapes divided by the time between them is the rate
per bucket, i.e. a :class:`Workload`. Several gateway replicas: pass every replica's URL, counts add up.
A counter that went down (a gateway restarted between the scrapes) counts from zero, as Prometheus' rate().
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence

import httpx

from flotilla.sizes import parse_sizes
from optimizer.errors import InputError
from optimizer.model import Grid, Workload

Counts = Mapping[tuple[int, int], float]


def workload_from_counts(before: Counts, after: Counts, seconds: float, grid: Grid, model: str) -> Workload:
    if seconds <= 0:
        raise InputError("the observation window must be positive")
    rows, cols = grid.shape
    rate = [[0.0] * cols for _ in range(rows)]
    for (input_le, output_le), value in after.items():
        if input_le not in grid.input_bounds or output_le not in grid.output_bounds:
            raise InputError(
                f"the gateway counts bucket ({input_le}, {output_le}), which is not on the profiles' grid "
                f"{list(grid.input_bounds)} × {list(grid.output_bounds)}"
            )
        delta = value - before.get((input_le, output_le), 0.0)
        if delta < 0:
            delta = value
        rate[grid.input_bounds.index(input_le)][grid.output_bounds.index(output_le)] = delta / seconds
    return Workload(
        input_bounds=grid.input_bounds,
        output_bounds=grid.output_bounds,
        model=model,
        rate=tuple(tuple(r) for r in rate),
    )


async def _scrape(client: httpx.AsyncClient, urls: Sequence[str], model: str) -> dict[tuple[int, int], float]:
    total: dict[tuple[int, int], float] = {}
    for url in urls:
        try:
            response = await client.get(url.rstrip("/") + "/metrics")
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise InputError(f"cannot scrape {url}/metrics: {exc}") from None
        for key, value in parse_sizes(response.text, model).items():
            total[key] = total.get(key, 0.0) + value
    return total


async def observe(urls: Sequence[str], model: str, window: float, grid: Grid) -> Workload:
    """Scrape the gateways, wait ``window`` seconds, scrape again: the workload of ``model`` meanwhile."""
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        before = await _scrape(client, urls, model)
        started = time.monotonic()
        await asyncio.sleep(window)
        after = await _scrape(client, urls, model)
        elapsed = time.monotonic() - started
    workload = workload_from_counts(before, after, elapsed, grid, model)
    if workload.total == 0:
        raise InputError(f"the gateway saw no finished requests of {model!r} in {window:g} s")
    return workload
