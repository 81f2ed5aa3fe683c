"""A load probe over HTTP against one live engine: real vLLM or engine_sim, the same code path.

Requests are ``/v1/completions`` with the prompt as **token ids** (both vLLM and engine_sim accept them), so
the prompt length is exact without a tokenizer, and ``ignore_eos`` with ``max_tokens`` fixes the output
length. Arrivals are open-loop Poisson at the probed rate: a request is sent at its time whatever the engine
does (no coordinated omission).

Timings:

* engine_sim answers non-streaming requests with its **simulated** timings (``x-sim-ttft``, ``x-sim-tpot``),
  which host load does not distort; the probe reads ``/sim/stats`` once for the engine's ``time_scale`` and
  paces arrivals in simulated seconds (a time-scaled engine profiles many times faster than real time);
* any other engine (vLLM) is measured from the client: streaming, TTFT = first content chunk, TPOT = the
  rest of the request divided by the remaining tokens, in wall seconds.
"""

from __future__ import annotations

import asyncio
import random
import time

import httpx
import orjson

from optimizer.profiling import LoadProbe, Outcomes

#: token ids used for prompts: inside every common vocabulary, clear of special tokens
_TOKEN_LOW, _TOKEN_HIGH = 1000, 30_000


async def engine_time_scale(client: httpx.AsyncClient, base_url: str) -> float | None:
    """The simulator's ``time_scale`` (``None`` for an engine that is not engine_sim)."""
    try:
        response = await client.get(f"{base_url}/sim/stats")
        if response.status_code == 200:
            return float(response.json()["time_scale"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None
    return None


def _body(model: str, prompt: list[int], output: int, stream: bool) -> bytes:
    return orjson.dumps({
        "model": model, "prompt": prompt, "max_tokens": output, "ignore_eos": True, "temperature": 0.0,
        "stream": stream,
    })  # fmt: skip


async def _simulated(client: httpx.AsyncClient, url: str, body: bytes) -> tuple[float | None, float | None]:
    response = await client.post(url, content=body, headers={"content-type": "application/json"})
    if response.status_code != 200:
        return None, None
    ttft = float(response.headers["x-sim-ttft"])
    tpot = response.headers.get("x-sim-tpot")
    return ttft, float(tpot) if tpot is not None else 0.0


async def _streamed(
    client: httpx.AsyncClient, url: str, body: bytes, output: int
) -> tuple[float | None, float | None]:
    start = time.perf_counter()
    first: float | None = None
    async with client.stream("POST", url, content=body, headers={"content-type": "application/json"}) as r:
        if r.status_code != 200:
            return None, None
        async for line in r.aiter_lines():
            if first is None and line.startswith("data: ") and line != "data: [DONE]":
                first = time.perf_counter()
    if first is None:
        return None, None
    end = time.perf_counter()
    return first - start, (end - first) / (output - 1) if output > 1 else 0.0


def http_probe(base_url: str, model: str, *, timeout: float = 600.0, seed: int = 0) -> LoadProbe:
    """A :data:`optimizer.profiling.LoadProbe` against the engine at ``base_url`` serving ``model``."""
    base = base_url.rstrip("/")
    url = f"{base}/v1/completions"

    async def probe(prompt: int, output: int, rate: float, requests: int) -> Outcomes:
        rng = random.Random(hash((seed, prompt, output, rate)) & 0xFFFFFFFF)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(timeout), limits=limits, trust_env=False
        ) as client:
            scale = await engine_time_scale(client, base)
            pace = scale if scale is not None else 1.0

            async def one(at: float, start: float) -> tuple[float | None, float | None]:
                delay = start + at * pace - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                ids = [rng.randrange(_TOKEN_LOW, _TOKEN_HIGH) for _ in range(prompt)]
                body = _body(model, ids, output, stream=scale is None)
                try:
                    if scale is not None:
                        return await _simulated(client, url, body)
                    return await _streamed(client, url, body, output)
                except (httpx.HTTPError, KeyError, ValueError):
                    return None, None

            t, times = 0.0, []
            for _ in range(requests):
                t += rng.expovariate(rate)
                times.append(t)
            start = time.perf_counter()
            return list(await asyncio.gather(*(one(at, start) for at in times)))

    return probe
