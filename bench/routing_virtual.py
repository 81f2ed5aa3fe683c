"""A routing fleet in virtual time: the standard suite's workloads on 8 simulated engines, no HTTP, no wall clock.

Why: ``flotilla bench`` measures routers through real processes on a shared 2-core machine, so every TTFT
figure carries the routers' CPU time and the machine's drift. The question "is an engine-side 0.8× against
the best peer attainable at all on this fleet?" needs the routing decisions alone, replayed exactly and
cheaply enough to try a clairvoyant router. This module drives :class:`engine_sim.offline.EngineCore` — the
served simulator's own scheduler, block pool, prefix cache and step-time model — for every engine, and asks a
:class:`Policy` for an engine at each arrival, with only what a router could know at that time.

What a router sees (:class:`RouterView`): its own in-flight count per engine (up at routing, down when the
response ends), first-token and end events (as a streaming proxy sees them), and each engine's scraped
``running``/``waiting`` gauges refreshed every ``scrape_period`` (the gateway scrapes every 0.5 s wall = 1 s
simulated at the suite's time scale 0.5). Only the clairvoyant policy reads the engines themselves.

Simplifications against the served suite (say them when quoting numbers):

* Time is the simulator's: rates and think times are the suite's wall-clock values divided by the time
  scale (×2 here), and TTFT is the engines' ``first_token − arrival`` (the "engine-side" figure of the docs).
* Routers react to first tokens and completions at ``tick`` granularity (2 ms simulated), not instantly.
* Closed-loop sessions: the next turn is sent ``think`` after the previous turn's *last* token (engine time),
  so transport time is zero; no deadline (every request finishes).
* Requests run with ``ignore_eos`` to ``max_tokens``, as the bench client asks.
"""

from __future__ import annotations

import copy
import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bench.arrivals import poisson_schedule
from bench.results import histogram_quantile
from bench.sessions import group_sessions, think_times
from bench.stats import percentile_inf
from bench.suites import WorkloadRun
from bench.workloads import build, prompt_ids
from engine_sim.config import EngineConfig
from engine_sim.hashing import BlockHasher, none_hash
from engine_sim.metrics import TTFT_BUCKETS
from engine_sim.offline import EngineCore
from engine_sim.request import Request, Timing

#: the standard suite's engine: the A100 Llama-3-8B step model with a deliberately small KV cache
STANDARD_ENGINE = EngineConfig(preset="a100-llama3-8b", num_gpu_blocks=1024, block_size=16)


@dataclass(frozen=True)
class Trace:
    """One workload and seed in simulated seconds: prompts (engine token ids), output lengths, and either one
    arrival time per request (open loop) or sessions with start times and per-turn think times."""

    workload: str
    prompts: list[list[int]]
    outputs: list[int]
    sessions: list[str]
    #: open loop: arrival per request; closed loop: None
    arrivals: list[float] | None
    #: closed loop: request indices per session (turn order), each session's start, think before each turn
    turns: list[list[int]] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    think: dict[int, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompts)


def make_trace(run: WorkloadRun, seed: int, *, time_scale: float = 0.5) -> Trace:
    """The trace the served suite would replay for ``run`` and ``seed``, in the engines' simulated time."""
    workload = build(run.workload, seed=seed, params=run.params)
    prompts = prompt_ids(workload)
    outputs = [r.max_tokens for r in workload.requests]
    sessions = [r.session for r in workload.requests]
    stretch = 1.0 / time_scale
    if not run.closed_loop:
        offsets = poisson_schedule(len(workload), run.rate, seed=seed)
        return Trace(run.workload, prompts, outputs, sessions, [t * stretch for t in offsets])
    groups = group_sessions(workload.requests)
    starts = poisson_schedule(len(groups), run.rate, seed=seed)
    think = think_times(groups, run.think, seed=seed)
    return Trace(
        run.workload, prompts, outputs, sessions, None,
        turns=[[r.index for r in g] for g in groups], starts=[t * stretch for t in starts],
        think={i: t * stretch for i, t in think.items()},
    )  # fmt: skip


@dataclass(slots=True)
class Arrival:
    """What a router is told about one request (its prompt ids, expected output and session key)."""

    index: int
    at: float
    prompt: list[int]
    max_tokens: int
    session: str


@dataclass(slots=True)
class Scraped:
    running: int = 0
    waiting: int = 0


@dataclass
class RouterView:
    """The fleet as a router sees it at ``now``; ``engines`` is for the clairvoyant policy only."""

    now: float
    engines: list[EngineCore]
    in_flight: list[int]
    scraped: list[Scraped]
    block_size: int
    #: builds the engine-side request for an arrival (a fresh copy each call), for what-if simulation
    make_request: Callable[[Arrival], Request]


class Policy(Protocol):
    name: str

    def pick(self, arrival: Arrival, view: RouterView) -> int:
        """The engine (index) for ``arrival``; the policy records whatever it learns from its own choice."""
        ...

    def first_token(self, index: int, engine: int) -> None: ...

    def finished(self, index: int, engine: int) -> None: ...


@dataclass
class RunResult:
    workload: str
    policy: str
    #: engine-side TTFT (simulated s) per request in send order, the warm-up excluded
    ttfts: list[float]
    hit_rate: float
    #: busiest engine's request count ÷ the mean
    imbalance: float
    per_engine: list[int]
    seed: int = 0
    #: p90 as the served suite computes "engine TTFT p90": from the engines' TTFT histogram (vLLM's buckets,
    #: interpolated), over every request including the warm-up
    histogram_p90: float = math.nan


class _Templates:
    """Engine-side requests are built from one hashed template per prompt: hashing (SHA-256 per block, as the
    engine does) is the costliest part of a request, and every engine shares the hash root."""

    def __init__(self, trace: Trace, config: EngineConfig) -> None:
        self.config = config
        self.root = none_hash(config.seed)
        self.hashers: list[BlockHasher] = []
        for prompt in trace.prompts:
            h = BlockHasher(self.root, config.block_size, None, None)
            h.extend(prompt)
            self.hashers.append(h)

    def request(self, a: Arrival) -> Request:
        template = self.hashers[a.index]
        hasher = copy.copy(template)  # the chain continues where the template stopped (its parent digest)
        hasher.hashes = template.hashes[: len(a.prompt) // self.config.block_size]
        hasher.extra = template.extra[: len(hasher.hashes)]
        return Request(
            request_id=str(a.index), prompt_len=len(a.prompt), tokens=list(a.prompt), max_tokens=a.max_tokens,
            natural_len=None, stream_seed=a.index, hasher=hasher, timing=Timing(a.at),
        )  # fmt: skip


def simulate(
    trace: Trace, policy: Policy, *, engines: int = 8, config: EngineConfig = STANDARD_ENGINE,
    warmup: float = 0.1, tick: float = 0.002, scrape_period: float = 1.0, horizon: float = 3600.0,
) -> RunResult:  # fmt: skip
    """Replay ``trace`` through ``policy`` on ``engines`` fresh engines; deterministic for a given input."""
    templates = _Templates(trace, config)
    fleet = [EngineCore(config, seed=config.seed) for _ in range(engines)]
    in_flight = [0] * engines
    scraped = [Scraped() for _ in range(engines)]
    view = RouterView(0.0, fleet, in_flight, scraped, config.block_size, templates.request)
    heap: list[tuple[float, int]] = []
    if trace.arrivals is not None:
        heap = [(t, i) for i, t in enumerate(trace.arrivals)]
    else:
        heap = [(s, turns[0]) for s, turns in zip(trace.starts, trace.turns, strict=True)]
    heapq.heapify(heap)
    next_turn = {turns[k]: turns[k + 1] for turns in trace.turns for k in range(len(turns) - 1)}
    live: list[tuple[int, int, Request]] = []  # (index, engine, request) not finished yet
    requests: dict[int, Request] = {}
    started: set[int] = set()
    sent: list[tuple[float, int]] = []
    per_engine = [0] * engines
    now, next_scrape = 0.0, 0.0
    while heap or live:
        if now > horizon:
            raise RuntimeError(f"{trace.workload}/{policy.name}: not finished after {horizon} simulated s")
        target = heap[0][0] if heap else math.inf
        now = min(target, now + tick) if live else target
        for core in fleet:
            core.advance(now)
        still: list[tuple[int, int, Request]] = []
        for index, e, req in live:
            t = req.timing
            if t.first_token is not None and index not in started:
                started.add(index)
                policy.first_token(index, e)
            if t.finished is not None:
                in_flight[e] -= 1
                policy.finished(index, e)
                follow = next_turn.get(index)
                if follow is not None:
                    heapq.heappush(heap, (max(now, t.finished + trace.think.get(follow, 0.0)), follow))
            else:
                still.append((index, e, req))
        live = still
        if now >= next_scrape:
            for e, core in enumerate(fleet):
                scraped[e] = Scraped(core.running, core.waiting)
            next_scrape = now + scrape_period
        while heap and heap[0][0] <= now:
            at, index = heapq.heappop(heap)
            arrival = Arrival(index, at, trace.prompts[index], trace.outputs[index], trace.sessions[index])
            view.now = at
            e = policy.pick(arrival, view)
            req = templates.request(arrival)
            fleet[e].enqueue(req)
            in_flight[e] += 1
            per_engine[e] += 1
            requests[index] = req
            live.append((index, e, req))
            sent.append((at, index))
    sent.sort()
    skip = math.floor(len(sent) * warmup)
    ttfts = []
    for _, index in sent[skip:]:
        t = requests[index].timing
        ttfts.append(math.inf if t.first_token is None else t.first_token - t.arrival)
    every = [r.timing.ttft for r in requests.values()]
    counts = [
        (le, float(sum(1 for t in every if t is not None and t <= le))) for le in (*TTFT_BUCKETS, math.inf)
    ]
    hits = sum(c.scheduler.stats.prefix_hits for c in fleet)
    queries = sum(c.scheduler.stats.prefix_queries for c in fleet)
    mean = sum(per_engine) / engines
    return RunResult(
        trace.workload, policy.name, ttfts, hits / queries if queries else 0.0,
        max(per_engine) / mean if mean else 0.0, per_engine, histogram_p90=histogram_quantile(counts, 0.9),
    )  # fmt: skip


def predicted_ttft(core: EngineCore, req: Request, *, limit: float = 600.0) -> tuple[float, int]:
    """This request's TTFT on ``core`` if it were sent there now, and the prompt tokens it would find cached: a
    forked engine is run until its first token (requests that arrive later cannot overtake it under FCFS, so
    this is exact up to the decode load they would add)."""
    twin = core.fork()
    twin.enqueue(req)
    step = 0.05
    until = max(twin.now, req.timing.arrival)
    while req.timing.first_token is None:
        until += step
        twin.advance(until)
        if until - req.timing.arrival > limit:
            return math.inf, 0
    return req.timing.first_token - req.timing.arrival, req.cached_tokens


def isolated_lower_bound(
    trace: Trace, *, config: EngineConfig = STANDARD_ENGINE, warmup: float = 0.1
) -> list[float]:
    """Per request, the TTFT it would get *alone on an idle engine already holding the longest prefix any
    earlier request of the trace had* (the infinite-cache oracle's hit): no router can beat that for any
    request, and a percentile is monotone in every element, so the p90 of these values is a lower bound on
    every router's p90 on this fleet. Order: arrival order (open loop) or trace order (closed loop, where the
    real order depends on the run); the warm-up is excluded as in :func:`simulate`."""
    templates = _Templates(trace, config)
    order = (
        sorted(range(len(trace)), key=lambda i: (trace.arrivals[i], i))  # type: ignore[index]
        if trace.arrivals is not None
        else list(range(len(trace)))
    )
    seen: set[int] = set()
    memo: dict[tuple[int, int], float] = {}
    out: list[float] = []
    bs = config.block_size
    for k, i in enumerate(order):
        prompt = trace.prompts[i]
        hashes = templates.hashers[i].hashes
        cached = 0
        for h in hashes[: (len(prompt) - 1) // bs]:
            if h not in seen:
                break
            cached += 1
        seen.update(hashes)
        key = (len(prompt), cached)
        if key not in memo:
            memo[key] = _alone(templates, trace, i, cached, config)
        if k >= math.floor(len(order) * warmup):
            out.append(memo[key])
    return out


def _alone(templates: _Templates, trace: Trace, i: int, cached_blocks: int, config: EngineConfig) -> float:
    """TTFT of request ``i`` on an idle engine whose cache holds its first ``cached_blocks`` blocks."""
    core = EngineCore(config, seed=config.seed)
    prompt = trace.prompts[i]
    if cached_blocks:
        warm = Arrival(i, 0.0, prompt[: cached_blocks * config.block_size + 1], 1, "")
        core.enqueue(templates.request(warm))
        core.advance(math.inf)
    ttft, _ = predicted_ttft(
        core, templates.request(Arrival(i, core.now + 1.0, prompt, trace.outputs[i], ""))
    )
    return ttft


def p90(values: Sequence[float]) -> float:
    return percentile_inf(values, 90)
