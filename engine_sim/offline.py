"""The engine's scheduler and latency model driven in pure simulated time: no HTTP, no asyncio, no wall clock.

Profiling a GPU type (the highest rate that meets an SLO, per request size) and validating an optimizer plan
need many load levels × many request sizes. Over HTTP each probe costs real seconds and real CPU on a shared
machine, even time-scaled. This replays a list of arrivals through the *same* :class:`Scheduler`,
:class:`BlockPool` and :class:`LatencyModel` the served engine runs, stepping the clock from step to step, so
a probe of thousands of requests takes a fraction of a second and gives exactly the timings a served engine
would report (the served engine only adds wall-clock pacing; see :mod:`engine_sim.clock`).

``horizon`` bounds the work when the load is more than the engine can serve: requests not finished by then
are returned unfinished (the caller counts them as misses) instead of being simulated to the end of a queue
that grows without bound.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from engine_sim.blocks import BlockPool
from engine_sim.config import EngineConfig
from engine_sim.hashing import BlockHasher, none_hash
from engine_sim.latency import LatencyModel
from engine_sim.request import Request, Timing
from engine_sim.scheduler import Scheduler


@dataclass(frozen=True, slots=True)
class Arrival:
    """One request of a trace: when it arrives (simulated seconds) and its size (``ignore_eos`` semantics)."""

    at: float
    prompt_len: int
    output_len: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a client would measure; ``ttft``/``tpot`` are ``None`` when the request did not get that far."""

    arrival: Arrival
    ttft: float | None
    #: mean time per output token after the first (0 for one-token outputs)
    tpot: float | None
    finished: bool


def replay(
    config: EngineConfig, arrivals: Sequence[Arrival], *, horizon: float | None = None, seed: int = 0
) -> list[Outcome]:
    """Run ``arrivals`` (any order) through one engine with ``config``; outcomes in the order given."""
    pool = BlockPool(config.gpu_blocks, config.block_size)
    limit = min(config.max_model_len, pool.usable * config.block_size)
    sched = Scheduler(
        pool,
        max_num_seqs=config.seqs_limit,
        max_num_batched_tokens=config.token_budget,
        enable_prefix_caching=config.enable_prefix_caching,
        policy="fcfs",
    )
    latency = LatencyModel(config.profile)
    rng = random.Random(seed)
    root = none_hash(config.seed)
    order = sorted(range(len(arrivals)), key=lambda i: arrivals[i].at)
    requests: list[Request | None] = [None] * len(arrivals)
    now, nxt = 0.0, 0
    while nxt < len(order) or sched.has_work():
        if not sched.has_work():
            now = max(now, arrivals[order[nxt]].at)
        while nxt < len(order) and arrivals[order[nxt]].at <= now:
            i = order[nxt]
            requests[i] = req = _request(arrivals[i], i, limit, config, root, rng)
            sched.add(req)
            nxt += 1
        if horizon is not None and now > horizon:
            break
        step = sched.schedule()
        for req in step.first_scheduled:
            if req.timing.scheduled is None:
                req.timing.scheduled = now
        if not step.scheduled:
            if nxt >= len(order):
                break  # nothing can run and nothing will arrive: a request larger than the cache
            now = arrivals[order[nxt]].at
            continue
        now += latency.step_time(step.shape)
        done = sched.complete(step)
        for req, _ in done.tokens:
            t = req.timing
            if t.first_token is None:
                t.first_token = now
            t.last_token = now
        for req in done.finished:
            req.timing.finished = now
    return [_outcome(a, r) for a, r in zip(arrivals, requests, strict=True)]


def _request(
    a: Arrival, index: int, limit: int, config: EngineConfig, root: bytes, rng: random.Random
) -> Request:
    prompt_len = max(1, min(a.prompt_len, limit - 1))
    # unique prompts (a distinct first token): no two requests share a prefix, as in a profiling run
    first = rng.randrange(1000, 1 << 30)
    tokens = [first, *range(1000, 1000 + prompt_len - 1)]
    return Request(
        request_id=str(index),
        prompt_len=prompt_len,
        tokens=tokens,
        max_tokens=max(1, min(a.output_len, limit - prompt_len)),
        natural_len=None,
        stream_seed=index,
        hasher=BlockHasher(root, config.block_size, None, None),
        max_model_len=limit,
        timing=Timing(a.at),
    )


def _outcome(a: Arrival, req: Request | None) -> Outcome:
    if req is None:
        return Outcome(a, None, None, False)
    t = req.timing
    ttft = None if t.first_token is None else t.first_token - t.arrival
    tpot = None
    if t.first_token is not None and t.last_token is not None:
        n = req.num_output
        tpot = (t.last_token - t.first_token) / (n - 1) if n > 1 else 0.0
    return Outcome(a, ttft, tpot, t.finished is not None)
