"""The gateway at run time: the fleet of endpoints (gateway/fleet.py), indexes, router, proxy, limits — owned by
one object per app, whose request pipeline is admit → candidates → route → dispatch.

``create_app`` builds a :class:`Gateway` from settings; the lifespan starts and stops it. Nothing lives at
module level, so several differently configured gateways can run in one process (tests, ``flotilla up``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any

from flotilla import labels
from gateway.attempt import Attempt
from gateway.auth import KeyStore
from gateway.discovery.plans import load_plan_file
from gateway.endpoints import Endpoint, EndpointPool, EndpointSpec
from gateway.errors import BadRequest, RateLimited
from gateway.fleet import Fleet
from gateway.index import build_index, build_subscriber, start_index
from gateway.lifecycle import DemandHook, IndexHook, RequestContext, RequestHook, TelemetryHook, UsageHook
from gateway.parsing import check_request_id, header_map, max_model_len
from gateway.prompts import Prompts
from gateway.proxy import Proxy, RetryBudget
from gateway.ratelimit import Limiter, MemoryLimiter, RedisLimiter
from gateway.replies import Sendable
from gateway.routing import Router, RoutingRequest
from gateway.routing.router import Profile
from gateway.settings import GatewaySettings
from gateway.sizes import SizeHook
from gateway.telemetry import EndpointStats, GatewayMetrics, GatewayStats
from gateway.upstream import Upstream, make_upstream
from kvcache import KVEventSubscriber, MemoryIndex, PrefixIndex

log = logging.getLogger("flotilla.gateway")

#: upstream request headers copied from the client (everything else is dropped; the body is forwarded as is)
_FORWARDED = ("content-type", "accept", "user-agent", labels.HEADER_SESSION_ID, "traceparent", "tracestate")


class Gateway:
    """The gateway's state and its request pipeline.

    ``upstream`` (the proxy's HTTP client, gateway/upstream.py; default: built from settings at start, e.g.
    ``HttpxUpstream`` over a scripted httpx transport) and ``clock`` (breakers, holding) are injectable, so
    tests can drive failures and time without sockets or sleeps.
    """

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        upstream: Upstream | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        pool = EndpointPool(
            breaker_failures=settings.breaker_failures,
            breaker_cooldown=settings.breaker_cooldown,
            clock=clock,
        )
        self.metrics = GatewayMetrics(pool)
        #: the engines, what the control plane declares, and the requests held for them (gateway/fleet.py)
        self.fleet = Fleet(settings, pool, self.metrics, spawn=self._spawn, clock=clock)
        #: requests dispatched to an engine and not finished, per model (the autoscaler's demand signal)
        self.in_flight: dict[str, int] = {}
        fleet = self.fleet
        self.metrics.watch_demand(fleet.holding.queued, self.in_flight, fleet.arrivals, fleet.catalog.names)
        self.router = Router(
            profiles=settings.profiles,
            default_profile=settings.default_profile,
            model_profiles=settings.model_profiles,
            prefix_mode=settings.prefix_mode,
        )
        if settings.routing_plan is not None:
            self.router.plans.replace(load_plan_file(settings.routing_plan))
        #: request parsing and tokenisation (gateway/prompts.py)
        self.prompts = Prompts(settings)
        self.tokenizer = self.prompts.tokenizer
        self.keys = KeyStore.load(settings.api_keys, settings.api_keys_file)
        self.index = build_index(settings.index_backend, settings.redis_url)
        #: the index fed by engines' KV events (precise mode), and its subscriber
        self.precise_index: PrefixIndex | None = None
        self.subscriber: KVEventSubscriber | None = None
        self.limiter: Limiter = (
            RedisLimiter(settings.redis_url)
            if settings.ratelimit_backend == "redis" and settings.redis_url
            else MemoryLimiter()
        )
        self.upstream: Upstream | None = upstream
        self.proxy: Proxy | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watchers: list[Any] = []
        self._wanted_profiles: dict[str, str] = {}
        self.requests = 0
        self.errors = 0
        #: request ids: 128 random bits from a generator seeded once (uuid4 reads the OS's random source on
        #: every request, a system call that gives up the GIL and waits for it back behind a tokenizer thread)
        self._ids = random.Random(os.urandom(32))
        self._match_sum = 0.0
        self._match_n = 0
        self.metrics.watch_backend_errors(
            {
                "ratelimit": lambda: getattr(self.limiter, "errors", 0),
                "prefix_index": lambda: getattr(getattr(self.index, "stats", None), "failures", 0),
            }
        )
        #: what happens because a request was routed, and when it ends (gateway/lifecycle.py)
        self.hooks: list[RequestHook] = [
            DemandHook(self.in_flight),
            IndexHook(self.index, self._spawn),
            UsageHook(self.limiter, self._spawn),
            TelemetryHook(self.metrics, self._count),
            SizeHook(self.metrics.registry),
        ]

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        s = self.settings
        if self.upstream is None:
            self.upstream = make_upstream(
                s.transport, max_connections=s.max_connections, connect_timeout=s.connect_timeout
            )
        self.proxy = Proxy(
            self.upstream,
            self.metrics,
            max_retries=s.max_retries,
            budget=RetryBudget(s.retry_budget_ratio, s.retry_budget_min),
            first_byte_timeout=s.first_byte_timeout,
            stream_idle_timeout=s.stream_idle_timeout,
            retry_after=s.retry_after,
            debug_headers=s.debug_headers,
        )
        await start_index(self.index)
        self.metrics.watch("prefix_index", self.index)
        if s.prefix_mode == "precise":
            self.precise_index = MemoryIndex()
            self.subscriber = build_subscriber(self.precise_index, block_size=s.block_size, seed=s.hash_seed)
            self.metrics.watch("kv_events", self.subscriber)
        await self.fleet.start(on_unhealthy=self._forget, on_scraped=self._after_scrape)
        if s.kubernetes:
            from gateway.discovery.kube import CatalogWatcher, PodWatcher
            from gateway.discovery.plans import PlanWatcher

            loop = asyncio.get_running_loop()
            self._watchers = [
                PodWatcher(
                    loop,
                    self.set_endpoints,
                    namespace=s.namespace,
                    label_selector=s.label_selector,
                    kubeconfig=s.kubeconfig,
                ),
                CatalogWatcher(
                    loop, self.fleet.catalog.declare, namespace=s.namespace, kubeconfig=s.kubeconfig
                ),
                PlanWatcher(loop, self.router.plans.replace, namespace=s.namespace, kubeconfig=s.kubeconfig),
            ]
            for watcher in self._watchers:
                watcher.start()

    async def stop(self) -> None:
        for watcher in self._watchers:
            watcher.stop()
        for task in self._tasks:
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.subscriber is not None:
            await self.subscriber.close()
        if self.upstream is not None:
            await self.upstream.aclose()
        await self.fleet.stop()
        await self.index.close()
        await self.limiter.close()
        self.prompts.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def set_endpoints(self, specs: list[EndpointSpec]) -> None:
        """Replace the endpoint set (Kubernetes discovery); new endpoints are scraped right away."""
        wanted = {s.model: s.routing_profile for s in specs if s.model and s.routing_profile}
        if wanted != self._wanted_profiles:
            self._wanted_profiles = wanted
            for name in self.router.discover_profiles(wanted):
                log.warning(
                    "routing profile %r asked for by a model's pods is unknown here; using the default", name
                )
        for key in self.fleet.set_endpoints(specs):
            self._spawn(self.index.remove_endpoint(key))
            if self.subscriber is not None:
                self._spawn(self.subscriber.remove_endpoint(key))

    async def _forget(self, endpoint: Endpoint) -> None:
        await self.index.remove_endpoint(endpoint.key)

    async def _after_scrape(self) -> None:
        self._cap_index()
        await self._sync_subscriber()

    def _cap_index(self) -> None:
        """Size each engine's share of the approximate index as its KV cache (``index_engine_capacity``)."""
        if not self.settings.index_engine_capacity or not isinstance(self.index, MemoryIndex):
            return
        size = self.settings.block_size
        for endpoint in self.fleet.pool:
            m = endpoint.metrics
            if m is not None and m.num_gpu_blocks is not None and m.num_gpu_blocks > 1:
                blocks = (m.num_gpu_blocks - 1) * (m.block_size or size) // size
                self.index.cap_endpoint(endpoint.key, max(1, blocks))

    async def _sync_subscriber(self) -> None:
        """Follow the KV events of every endpoint that publishes them, once its served model is known
        (block hashes are scoped by model, so the subscriber must use the same name requests do)."""
        if self.subscriber is None:
            return
        for endpoint in self.fleet.pool:
            if endpoint.spec.kv_events is None or not endpoint.models_known:
                continue
            model = endpoint.spec.model or next(
                (str(c["id"]) for c in endpoint.cards if not c.get("parent")), None
            )
            if model is not None:
                await self.subscriber.add_endpoint(endpoint.key, endpoint.spec.kv_events, model)

    # ------------------------------------------------------------------ requests
    async def _match(self, kind: str, hashes: Any, keys: Any) -> dict[str, int]:
        index = self.precise_index if kind == "precise" and self.precise_index is not None else self.index
        return await index.match(hashes, keys)

    # ------------------------------------------------------------------ the request pipeline
    async def handle(self, path: str, kind: str, raw: bytes, headers: Any) -> Sendable:
        """admit → candidates (held while none is ready) → route → dispatch, with hooks at routing and end."""
        headers = header_map(headers)
        ctx = await self._admit(path, kind, raw, headers)
        profile = self.router.profile_for(ctx.model, headers.get(labels.HEADER_ROUTING_STRATEGY))
        if profile is None:
            self.metrics.rejections.labels("bad_strategy").inc()
            raise BadRequest(
                f"unknown routing strategy {headers.get(labels.HEADER_ROUTING_STRATEGY)!r}; "
                f"known: {', '.join(sorted(self.router.profiles))}",
                param=labels.HEADER_ROUTING_STRATEGY,
            )
        candidates = await self.fleet.candidates(ctx.model, len(raw))
        self._check_context(ctx, candidates)
        if ctx.parsed.engine_tokenize:
            assert self.fleet.scrape_client is not None, "Gateway.start() was not awaited"
            await self.prompts.from_engine(
                self.fleet.scrape_client, ctx.parsed, candidates[0].url, ctx.request_id
            )
        await self._route(ctx, profile, candidates, headers)
        response = await self._dispatch(ctx, path, raw, headers)
        if ctx.limit_headers:
            response.add_headers(ctx.limit_headers)
        return response

    async def _admit(self, path: str, kind: str, raw: bytes, headers: Any) -> RequestContext:
        """Who asks (request id, API key), what for (the parsed body), and whether their limits allow it."""
        request_id = (
            check_request_id(headers.get(labels.HEADER_REQUEST_ID)) or f"{self._ids.getrandbits(128):032x}"
        )
        key = self.keys.authenticate(headers.get("authorization"))
        parsed = await self.prompts.parse(raw, kind)
        ctx = RequestContext(path=path, request_id=request_id, parsed=parsed, key=key)
        rpm = (key.rpm if key else None) or self.settings.rpm_limit
        tpm = (key.tpm if key else None) or self.settings.tpm_limit
        if not (rpm or tpm):
            return ctx
        ctx.key_id = key.digest[:16] if key else "anonymous"
        ctx.tpm = tpm
        ctx.charged_tokens = parsed.prompt_tokens + parsed.max_tokens
        who = key.name if key else "anonymous"
        if tpm and ctx.charged_tokens > tpm:  # could never pass: say so instead of inviting a retry
            self.metrics.rejections.labels("too_large").inc()
            raise BadRequest(
                f"request needs about {ctx.charged_tokens} tokens (prompt + max_tokens), more than the "
                f"{tpm} tokens per minute allowed for key '{who}'; lower max_tokens or the prompt",
                param="max_tokens",
                code="request_too_large",
            )
        verdict = await self.limiter.acquire(ctx.key_id, ctx.charged_tokens, rpm, tpm)
        ctx.limit_headers = verdict.headers
        if not verdict.allowed:
            self.metrics.rejections.labels("rate_limited").inc()
            raise RateLimited(
                f"rate limit reached for key '{who}' (rpm {rpm}, tpm {tpm})", headers=verdict.headers
            )
        return ctx

    def _check_context(self, ctx: RequestContext, candidates: list[Endpoint]) -> None:
        """``max_tokens`` above the model's context length can never be served: 400, as vLLM answers."""
        requested = ctx.parsed.requested_max_tokens
        limit = max_model_len(candidates, ctx.model) if requested else None
        if requested is not None and limit is not None and requested > limit:
            raise BadRequest(
                f"max_tokens ({requested}) exceeds the maximum context length of model "
                f"'{ctx.model}' ({limit} tokens)",
                param="max_tokens",
            )

    async def _route(
        self, ctx: RequestContext, profile: Profile, candidates: list[Endpoint], headers: Any
    ) -> None:
        s = self.settings
        hashes = ctx.parsed.hashes
        ctx.hashes = hashes if hashes is not None else self.prompts.block_hashes(ctx.parsed)
        ctx.routing = RoutingRequest(
            model=ctx.model,
            prompt_tokens=ctx.parsed.first_tokens,
            hashes=ctx.hashes,
            block_size=s.block_size,
            max_tokens=ctx.parsed.max_tokens,
            session_id=headers.get(labels.HEADER_SESSION_ID),
            is_adapter=any(ctx.model in e.adapters for e in candidates),
        )
        ctx.decision = decision = await self.router.route(profile, ctx.routing, candidates, self._match)
        self.metrics.decision_of(decision.profile).observe(decision.seconds)
        if decision.match_ratio is not None:
            self.metrics.match_ratio.observe(decision.match_ratio)
            self._match_sum += decision.match_ratio
            self._match_n += 1

    async def _dispatch(self, ctx: RequestContext, path: str, raw: bytes, headers: Any) -> Sendable:
        """Forward with retries; every hook that saw the request routed sees it finish, on every exit path."""
        assert self.proxy is not None, "Gateway.start() was not awaited"
        assert ctx.routing is not None
        assert ctx.decision is not None
        upstream_headers = {h: headers[h] for h in _FORWARDED if h in headers}
        upstream_headers[labels.HEADER_REQUEST_ID] = ctx.request_id
        upstream_headers["accept-encoding"] = "identity"  # bodies are relayed as raw bytes
        ctx.attempt = Attempt(
            model=ctx.model,
            blocks=ctx.routing.blocks,
            request_id=ctx.request_id,
            prompt_blocks=-(-ctx.routing.prompt_tokens // ctx.routing.block_size),
            matches=ctx.routing.matches,
        )
        try:
            for hook in self.hooks:
                ctx.routed_by.append(hook)
                await hook.on_routed(ctx)
            return await self.proxy.forward(
                ctx.decision.ranked,
                path,
                raw,
                upstream_headers,
                stream=ctx.parsed.stream,
                attempt=ctx.attempt,
                on_done=lambda _attempt: ctx.finish(),
                # a declared model whose endpoints all failed to connect is held for a fresh endpoint, not 503
                refill=self.fleet.refill(ctx.model, len(raw)),
            )
        except BaseException:
            ctx.finish()  # no-op if the proxy already reported the end
            raise

    def _count(self, status: int) -> None:
        self.requests += 1
        if status >= 500:
            self.errors += 1

    def stats(self) -> GatewayStats:
        hits = queries = 0.0
        endpoints = []
        for e in self.fleet.pool:
            if e.metrics is not None:
                hits += e.metrics.prefix_hits
                queries += e.metrics.prefix_queries
            endpoints.append(
                EndpointStats(e.key, e.available, e.in_flight, e.served, tuple(sorted(e.models)))
            )
        return GatewayStats(
            requests=self.requests,
            errors=self.errors,
            endpoints=tuple(endpoints),
            engine_prefix_hit_ratio=hits / queries if queries else None,
            routed_match_ratio=self._match_sum / self._match_n if self._match_n else None,
        )
