"""Routing policies for the virtual fleet (:mod:`bench.routing_virtual`), each given what its router knows.

* :class:`FlotillaPolicy` — the gateway's *real* routing objects: a built-in profile from
  ``gateway.routing.registry`` (``default`` = ``ttft-cost``; also ``least-request``, ``round-robin``) run by
  ``Router.route``, the approximate :class:`kvcache.MemoryIndex` recorded with the chosen endpoint, real
  :class:`gateway.endpoints.Lease` objects for ``in_flight``/``pending_blocks`` (queued prefill released at the
  first token) and scraped ``running``/``waiting``. Only the picker's tie-break RNG is seeded here.
* :class:`SGLangCacheAware` — a model of the SGLang router's ``cache_aware`` (shared/reference/routing.md §1.2):
  router-side in-flight load per worker; *imbalanced* ⇔ ``max − min > balance_abs`` and ``max > balance_rel ×
  min`` → least loaded; else the best prefix match ratio in an approximate tree of what was sent to each
  worker, if ``> cache_threshold``, else the worker with the smallest tree; the text is inserted into the chosen
  worker's tree either way. Modelled at 4-token granularity instead of characters, with no tree eviction (the
  workloads stay far below its size limit); ties between equal matches go to the less loaded worker (SGLang
  takes an arbitrary holder: this only flatters the peer).
* :class:`ConsistentHash` — vllm-router's ``consistent_hash``: the session key on a hash ring (160 virtual
  nodes per worker), load ignored.
* :class:`Clairvoyant` — the upper bound: forks every engine (:meth:`EngineCore.fork`), runs the request on
  each copy to its first token and picks the smallest TTFT. Greedy: optimal for this request given the past,
  not for the requests that follow it.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Collection, Coroutine, Sequence
from typing import Any, TypeVar

import xxhash

from bench.routing_virtual import STANDARD_ENGINE, Arrival, RouterView, predicted_ttft
from flotilla.vllm_metrics import EngineMetrics
from gateway.endpoints import CircuitBreaker, Endpoint, EndpointSpec, Lease
from gateway.routing.plugins.pickers import MaxScore
from gateway.routing.registry import BUILTIN_PROFILES
from gateway.routing.router import Router, build_profile
from gateway.routing.types import RoutingRequest
from kvcache import MemoryIndex, block_hashes

T = TypeVar("T")
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (the router with an in-memory index) without an event loop."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("the routing coroutine suspended; the virtual fleet cannot wait for I/O")


class FlotillaPolicy:
    def __init__(
        self, engines: int, *, strategy: str = "default", seed: int = 0, endpoint_capacity: int | None = None
    ) -> None:
        self.name = f"flotilla:{strategy}" + (f"+capacity={endpoint_capacity}" if endpoint_capacity else "")
        self.router = Router(default_profile=strategy)
        self.profile = build_profile(strategy, BUILTIN_PROFILES[strategy], "approximate")
        if isinstance(self.profile.picker, MaxScore):
            self.profile.picker = MaxScore(random.Random(seed))
        self.endpoints = []
        for i in range(engines):
            e = Endpoint(
                EndpointSpec(url=f"http://127.0.0.1:{8000 + i}", model=MODEL), CircuitBreaker(3, 5.0)
            )
            e.healthy = True
            self.endpoints.append(e)
        self.now = 0.0
        self.index = MemoryIndex(endpoint_capacity=endpoint_capacity, clock=lambda: self.now)
        self.leases: dict[int, Lease] = {}

    async def _match(self, kind: str, hashes: Sequence[int], keys: Collection[str]) -> dict[str, int]:
        return self.index.match_now(hashes, keys)

    def pick(self, arrival: Arrival, view: RouterView) -> int:
        self.now = view.now
        for e, s in zip(self.endpoints, view.scraped, strict=True):
            e.metrics = EngineMetrics(running=s.running, waiting=s.waiting)
        hashes = block_hashes(arrival.prompt, block_size=view.block_size, scope=MODEL)
        request = RoutingRequest(
            MODEL, prompt_tokens=len(arrival.prompt), hashes=hashes, block_size=view.block_size,
            max_tokens=arrival.max_tokens, session_id=arrival.session,
        )  # fmt: skip
        decision = run_sync(self.router.route(self.profile, request, self.endpoints, self._match))
        chosen = decision.ranked[0]
        if hashes:
            self.index.record_now(chosen.key, hashes)
        prompt_blocks = -(-request.prompt_tokens // request.block_size)
        prefill = max(0, prompt_blocks - request.matches.get(chosen.key, 0))
        self.leases[arrival.index] = Lease(chosen, blocks=request.blocks, prefill=prefill)
        return self.endpoints.index(chosen)

    def first_token(self, index: int, engine: int) -> None:
        self.leases[index].first_byte()

    def finished(self, index: int, engine: int) -> None:
        self.leases.pop(index).release()


class SGLangCacheAware:
    def __init__(
        self, engines: int, *, cache_threshold: float = 0.2, balance_abs: int = 32, balance_rel: float = 1.5,
        unit: int = 4,
    ) -> None:  # fmt: skip
        self.name = f"sglang:cache_aware({cache_threshold}/{balance_abs}/{balance_rel})"
        self.cache_threshold = cache_threshold
        self.balance_abs = balance_abs
        self.balance_rel = balance_rel
        self.unit = unit
        self.trees: list[set[int]] = [set() for _ in range(engines)]
        self.load = [0] * engines

    def pick(self, arrival: Arrival, view: RouterView) -> int:
        load, n = self.load, len(self.load)
        hashes = block_hashes(arrival.prompt, block_size=self.unit)
        hi, lo = max(load), min(load)
        if hi - lo > self.balance_abs and hi > self.balance_rel * lo:
            e = min(range(n), key=lambda i: (load[i], i))
        else:
            matched = [_chain(tree, hashes) for tree in self.trees]
            best = max(matched)
            ratio = best * self.unit / max(1, len(arrival.prompt))
            if ratio > self.cache_threshold:
                e = min((i for i in range(n) if matched[i] == best), key=lambda i: (load[i], i))
            else:
                e = min(range(n), key=lambda i: (len(self.trees[i]), i))
        self.trees[e].update(hashes)
        load[e] += 1
        return e

    def first_token(self, index: int, engine: int) -> None:
        pass

    def finished(self, index: int, engine: int) -> None:
        self.load[engine] -= 1


def _chain(tree: set[int], hashes: Sequence[int]) -> int:
    n = 0
    for h in hashes:
        if h not in tree:
            break
        n += 1
    return n


class ConsistentHash:
    def __init__(self, engines: int, *, vnodes: int = 160) -> None:
        self.name = "vllm-router:consistent_hash"
        ring = sorted(
            (xxhash.xxh3_64_intdigest(f"worker-{e}-{v}".encode()), e)
            for e in range(engines)
            for v in range(vnodes)
        )
        self.points = [p for p, _ in ring]
        self.owners = [e for _, e in ring]

    def pick(self, arrival: Arrival, view: RouterView) -> int:
        i = bisect.bisect(self.points, xxhash.xxh3_64_intdigest(arrival.session.encode())) % len(self.points)
        return self.owners[i]

    def first_token(self, index: int, engine: int) -> None:
        pass

    def finished(self, index: int, engine: int) -> None:
        pass


class Clairvoyant:
    """``charge_prefill``: cost = TTFT + the prefill time of the tokens it would not find cached, i.e. new
    prefill is charged twice (once for this request, once for the engine time and cache it takes from later
    requests), the clairvoyant counterpart of ``ttft-cost``'s ``prefill_weight`` 2."""

    def __init__(
        self,
        *,
        charge_prefill: bool = False,
        prefill_tps: float = STANDARD_ENGINE.profile.prefill_tokens_per_s,
    ) -> None:
        self.name = "clairvoyant+prefill" if charge_prefill else "clairvoyant"
        self.charge_prefill = charge_prefill
        self.prefill_tps = prefill_tps

    def pick(self, arrival: Arrival, view: RouterView) -> int:
        cost = []
        for core in view.engines:
            ttft, cached = predicted_ttft(core, view.make_request(arrival))
            extra = (len(arrival.prompt) - cached) / self.prefill_tps if self.charge_prefill else 0.0
            cost.append(ttft + extra)
        return min(range(len(cost)), key=lambda i: (cost[i], view.in_flight[i], i))

    def first_token(self, index: int, engine: int) -> None:
        pass

    def finished(self, index: int, engine: int) -> None:
        pass
