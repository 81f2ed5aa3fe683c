"""The open-loop load of the autoscaling suite, timed in simulated seconds.

Requests are sent at their scheduled times whatever the fleet does (no coordinated omission: see
:mod:`bench.arrivals`). They are **not** streamed: an autoscaling run sends thousands of requests through one
2-core machine, and per-token SSE chunks would cost more CPU than the simulated engines.

TTFT is measured in simulated time, in two exact parts:

* the engine's own TTFT (``x-sim-ttft``: queueing in the engine + prefill, on the engine's simulated clock,
  which host load does not distort), returned here;
* the time the gateway held the request because no engine was serving (a cold start from zero), added by
  the runner from the scaler's record (:func:`bench.autoscaling.metrics.with_hold`).

Wall-clock time outside the engine (HTTP hops, the event loop of a loaded 2-core host) is deliberately *not*
counted: with time scaled by 0.05, 5 ms of apparatus latency would read as 100 ms of simulated TTFT.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence

import httpx
import orjson

from bench.autoscaling.metrics import Served
from flotilla.tokenizer import synthetic_ids, synthetic_text


def prompt(seed: int, index: int, tokens: int) -> str:
    return synthetic_text(synthetic_ids(seed * 1_000_003 + index, tokens))


async def _one(
    client: httpx.AsyncClient, url: str, body: bytes, at: float, start: float, time_scale: float
) -> Served:
    due = start + at * time_scale
    delay = due - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)
    try:
        response = await client.post(url, content=body, headers={"content-type": "application/json"})
        if response.status_code != 200:
            return Served(at, math.inf)
        return Served(at, float(response.headers["x-sim-ttft"]), float(response.headers["x-sim-e2e"]))
    except (httpx.HTTPError, KeyError, ValueError):
        return Served(at, math.inf)


async def replay(
    base_url: str, arrivals: Sequence[float], *, model: str, prompt_tokens: int, output_tokens: int, seed: int,
    time_scale: float, start: float, request_timeout: float,
) -> list[Served]:  # fmt: skip
    """Send one chat request per arrival (simulated seconds after ``start``, a perf_counter time)."""
    url = base_url.rstrip("/") + "/chat/completions"
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=512)
    async with httpx.AsyncClient(
        limits=limits, timeout=httpx.Timeout(request_timeout), trust_env=False
    ) as client:
        tasks = []
        for i, at in enumerate(arrivals):
            body = orjson.dumps({
                "model": model, "messages": [{"role": "user", "content": prompt(seed, i, prompt_tokens)}],
                "max_tokens": output_tokens, "ignore_eos": True, "temperature": 0.0,
            })  # fmt: skip
            due = start + at * time_scale
            # create tasks shortly before they are due, so thousands of sleeping tasks do not pile up
            lead = due - time.perf_counter() - 0.5
            if lead > 0:
                await asyncio.sleep(lead)
            tasks.append(asyncio.create_task(_one(client, url, body, at, start, time_scale)))
        return list(await asyncio.gather(*tasks))
