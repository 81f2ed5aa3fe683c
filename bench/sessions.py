"""Closed-loop sessions: a conversation's next turn is sent only after its previous answer arrived.

Multi-turn chats and agents cannot send turn k+1 before turn k's answer exists; an open-loop replay that does
(as this harness once did) lets a router see turn k+1 while turn k is still prefilling, which is neither what
happens in production nor fair to cache-aware routers. Here each session starts at its own (open-loop,
Poisson) time, and every later turn waits for the previous response to finish plus a *think time* (a user
reading, a tool running), drawn from an exponential distribution with a seeded RNG so every contender sees the
same think times. Latency is measured from each turn's actual send time: there is no schedule to measure from.
Turns not finished by the deadline count as failures ("timeout").
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping, Sequence

import httpx

from bench.client import send_one, wait_or_cancel
from bench.results import RequestResult
from bench.workloads import BenchRequest


def group_sessions(requests: Sequence[BenchRequest]) -> list[list[BenchRequest]]:
    """Requests grouped by session key, each group in trace order; groups ordered by their first request."""
    groups: dict[str, list[BenchRequest]] = {}
    for request in requests:
        groups.setdefault(request.session, []).append(request)
    return list(groups.values())


def think_times(sessions: Sequence[Sequence[BenchRequest]], mean: float, *, seed: int) -> dict[int, float]:
    """Seeded think time (seconds) before each non-first turn, keyed by request index (0 for first turns)."""
    if mean < 0:
        raise ValueError(f"think time must be >= 0 s, got {mean}")
    rng = random.Random(seed * 7919 + 17)
    out: dict[int, float] = {}
    for turns in sessions:
        for k, request in enumerate(turns):
            out[request.index] = 0.0 if k == 0 or mean == 0 else rng.expovariate(1.0 / mean)
    return out


async def run_sessions(
    *,
    base_url: str,
    sessions: Sequence[Sequence[BenchRequest]],
    starts: Sequence[float],
    think: Mapping[int, float],
    model: str,
    deadline: float,
    headers: Mapping[str, str] | None = None,
    request_timeout: float = 120.0,
    on_done: Callable[[RequestResult], None] | None = None,
) -> tuple[list[RequestResult], float]:
    """Run every session closed-loop from its start offset; returns results (in request-index order) and wall time."""
    if len(sessions) != len(starts):
        raise ValueError(f"{len(sessions)} sessions but {len(starts)} start times")
    url = base_url.rstrip("/") + "/chat/completions"
    results: dict[int, RequestResult] = {}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    async with httpx.AsyncClient(
        limits=limits, timeout=httpx.Timeout(request_timeout, connect=10.0), trust_env=False
    ) as client:
        start = time.perf_counter()

        async def session(turns: Sequence[BenchRequest], offset: float) -> None:
            await asyncio.sleep(max(0.0, start + offset - time.perf_counter()))
            for request in turns:
                pause = think.get(request.index, 0.0)
                if pause:
                    await asyncio.sleep(pause)
                sent = time.perf_counter() - start
                result = await send_one(
                    client, url, request, model=model, headers=headers or {}, start=start, scheduled=sent
                )
                results[request.index] = result
                if on_done is not None:
                    on_done(result)

        tasks = [asyncio.create_task(session(t, o)) for t, o in zip(sessions, starts, strict=True)]
        await wait_or_cancel(tasks, deadline)
        wall = time.perf_counter() - start
    out: list[RequestResult] = []
    for turns in sessions:
        for request in turns:
            result = results.get(request.index)
            if result is None:
                result = RequestResult(index=request.index, scheduled=wall, error="timeout: session deadline")
                if on_done is not None:
                    on_done(result)
            out.append(result)
    return sorted(out, key=lambda r: r.index), wall
