"""The gateway at run time: endpoints, indexes, router, proxy, limits — owned by one object per app.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from flotilla import labels
from gateway.attempt import Attempt
from gateway.auth import KeyStore
from gateway.catalog import Catalog
from gateway.discovery.plans import load_plan_file
from gateway.discovery.static import static_specs
from gateway.endpoints import Endpoint, EndpointPool, EndpointSpec
from gateway.errors import BadRequest, ModelNotFound, NoEndpoint, RateLimited
from gateway.holding import Holding
from gateway.index import build_index, build_subscriber, start_index
from gateway.lifecycle import DemandHook, IndexHook, RequestContext, RequestHook, TelemetryHook, UsageHook
from gateway.parsing import check_request_id, max_model_len
from gateway.prompts import Prompts
from gateway.proxy import Proxy, Refill, RetryBudget
from gateway.ratelimit import Limiter, MemoryLimiter, RedisLimiter
from gateway.replies import Sendable
from gateway.routing import Router, RoutingRequest
from gateway.routing.router import Profile
from gateway.scraper import Scraper
from gateway.settings import GatewaySettings
from gateway.sizes import SizeHook
from gateway.telemetry import GatewayMetrics
from gateway.upstream import Upstream, make_transport, make_upstream
from kvcache import KVEventSubscriber, MemoryIndex, PrefixIndex

log = logging.getLogger("flotilla.gateway")

#: upstream request headers copied from the client (everything else is dropped; the body is forwarded as is)
_FORWARDED = ("content-type", "accept", "user-agent", labels.HEADER_SESSION_ID, "traceparent", "tracestate")


def header_map(headers: Any) -> Mapping[str, str]:
    """The request's headers as a plain dict, decoded once.

    Starlette's ``Headers`` scans its raw list and lower-cases the name on every lookup (~1.5 µs each), and a
    request looks up about sixteen (request id, key, strategy, session, the forwarded ones): ~20 µs, against
    ~7 µs for this one pass. Names in ASGI are already lower-case; of repeated headers the first wins, as
    ``Headers.get`` answers. A mapping without ``raw`` (a dict from a test or another caller) is used as is.
    """
    raw = getattr(headers, "raw", None)
    if raw is None:
        return headers  # type: ignore[no-any-return]
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(raw)}


@dataclass(frozen=True, slots=True)
class EndpointStats:
    key: str
    healthy: bool
    in_flight: int
    served: int
    models: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GatewayStats:
    """A cheap snapshot for status lines (``flotilla up``)."""

    requests: int
    errors: int
    endpoints: tuple[EndpointStats, ...]
    #: engine-side prefix-cache hit ratio (Σ hits ÷ Σ queries over scraped counters), None before data
    engine_prefix_hit_ratio: float | None
    #: mean matched ÷ total prompt blocks on the chosen endpoint, over routed requests
    routed_match_ratio: float | None


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
        self.pool = EndpointPool(
            breaker_failures=settings.breaker_failures,
            breaker_cooldown=settings.breaker_cooldown,
            clock=clock,
        )
        #: models and adapters the control plane declares, served or not (gateway/catalog.py)
        self.catalog = Catalog()
        self.holding: Holding[list[Endpoint]] = Holding(
            timeout=settings.hold_timeout,
            max_queued=settings.hold_max_queued,
            max_bytes=settings.hold_max_bytes,
            retry_after=settings.retry_after,
            refresh=self._refresh,
            clock=clock,
        )
        #: requests dispatched to an engine and not finished, per model (the autoscaler's demand signal)
        self.in_flight: dict[str, int] = {}
        #: requests that arrived per routable or declared model (a counter: the autoscaler's offered load)
        self.arrivals: dict[str, int] = {}
        self.metrics = GatewayMetrics(self.pool)
        self.metrics.watch_demand(self.holding.queued, self.in_flight, self.arrivals, self.catalog.names)
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
        self.scrape_client: httpx.AsyncClient | None = None
        self.proxy: Proxy | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watchers: list[Any] = []
        self._wanted_profiles: dict[str, str] = {}
        #: the endpoint set is known (static engines at once; Kubernetes after the first pod list)
        self.discovered = not settings.kubernetes
        self.requests = 0
        self.errors = 0
        #: request ids: 128 random bits from a generator seeded once (uuid4 reads the OS's random source on
        #: every request, a system call that gives up the GIL and waits for it back behind a tokenizer thread)
        self._ids = random.Random(os.urandom(32))
        self._match_sum = 0.0
        self._match_n = 0
        for spec in static_specs(settings.engines, settings.engines_file, settings.kv_events):
            self.pool.upsert(spec)
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
        # trust_env=False: engines are dialled directly, never through an HTTP(S)_PROXY from the environment;
        # the scrapes (/health + /metrics per engine per interval) ride the same kind of pool as the proxy
        self.scrape_client = httpx.AsyncClient(
            timeout=s.scrape_timeout,
            trust_env=False,
            transport=make_transport(s.transport, max_connections=s.max_connections),
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
        self.scraper = Scraper(
            self.pool,
            self.scrape_client,
            interval=s.scrape_interval,
            timeout=s.scrape_timeout,
            models_interval=s.models_interval,
            unhealthy_after=s.unhealthy_after,
            on_unhealthy=self._forget,
            on_scraped=self._after_scrape,
        )
        await start_index(self.index)
        self.metrics.watch("prefix_index", self.index)
        if s.prefix_mode == "precise":
            self.precise_index = MemoryIndex()
            self.subscriber = build_subscriber(self.precise_index, block_size=s.block_size, seed=s.hash_seed)
            self.metrics.watch("kv_events", self.subscriber)
        await self.scraper.scrape_all()  # know models and health before the first request
        self._spawn(self.scraper.run())
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
                CatalogWatcher(loop, self.catalog.declare, namespace=s.namespace, kubeconfig=s.kubeconfig),
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
        for closeable in (self.scrape_client,):
            if closeable is not None:
                await closeable.aclose()
        await self.index.close()
        await self.limiter.close()
        self.prompts.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def set_endpoints(self, specs: list[EndpointSpec]) -> None:
        """Replace the endpoint set (Kubernetes discovery); new endpoints are scraped right away."""
        self.discovered = True
        wanted = {s.model: s.routing_profile for s in specs if s.model and s.routing_profile}
        if wanted != self._wanted_profiles:
            self._wanted_profiles = wanted
            for name in self.router.discover_profiles(wanted):
                log.warning(
                    "routing profile %r asked for by a model's pods is unknown here; using the default", name
                )
        for key in self.pool.replace_all(specs):
            self._spawn(self.index.remove_endpoint(key))
            if self.subscriber is not None:
                self._spawn(self.subscriber.remove_endpoint(key))
        for endpoint in self.pool:
            if not endpoint.models_known:
                self._spawn(self.scraper.scrape_one(endpoint))
        self.holding.wake()

    async def _forget(self, endpoint: Endpoint) -> None:
        await self.index.remove_endpoint(endpoint.key)

    async def _after_scrape(self) -> None:
        self.holding.wake()
        self._cap_index()
        await self._sync_subscriber()

    def _cap_index(self) -> None:
        """Size each engine's share of the approximate index as its KV cache (``index_engine_capacity``)."""
        if not self.settings.index_engine_capacity or not isinstance(self.index, MemoryIndex):
            return
        size = self.settings.block_size
        for endpoint in self.pool:
            m = endpoint.metrics
            if m is not None and m.num_gpu_blocks is not None and m.num_gpu_blocks > 1:
                blocks = (m.num_gpu_blocks - 1) * (m.block_size or size) // size
                self.index.cap_endpoint(endpoint.key, max(1, blocks))

    async def _refresh(self, model: str) -> None:
        """Re-read, now, the endpoints that could start serving ``model`` (held requests wait on them):
        those not reached or not healthy yet, and for an adapter those of its base model."""
        base = self.catalog.base_of(model)
        due = [
            e
            for e in self.pool
            if not e.models_known or not e.healthy or (base is not None and e.serves(base))
        ]
        for endpoint in due:
            self.scraper.forget_models(endpoint)  # re-read /v1/models on this scrape
        if due:
            await asyncio.gather(*(self.scraper.scrape_one(e) for e in due))

    async def _sync_subscriber(self) -> None:
        """Follow the KV events of every endpoint that publishes them, once its served model is known
        (block hashes are scoped by model, so the subscriber must use the same name requests do)."""
        if self.subscriber is None:
            return
        for endpoint in self.pool:
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

    def _probe(self, model: str) -> list[Endpoint] | None:
        """The endpoints to route ``model`` to now; None = worth holding the request; raises = answer now."""
        hosting = self.pool.hosting(model)
        available = [e for e in hosting if e.available]
        if available:
            return available
        if model in self.catalog:
            return None  # declared by the control plane: scaling from zero, or an adapter being placed
        if not hosting and any(not e.models_known for e in self.pool):
            return None  # some endpoint was never reached: "unknown model" cannot be told from "not yet"
        if not hosting:
            self.metrics.rejections.labels("model_not_found").inc()
            raise ModelNotFound(f"The model `{model}` does not exist.", param="model")
        raise NoEndpoint(
            f"no healthy endpoint can serve model '{model}' right now",
            headers={"retry-after": str(self.settings.retry_after)},
        )

    async def _candidates(self, model: str, size: int) -> list[Endpoint]:
        if model in self.catalog or self.pool.hosting(model):  # known models only: bounded label values
            self.arrivals[model] = self.arrivals.get(model, 0) + 1
        try:
            return await self.holding.wait(model, size, lambda: self._probe(model))
        except NoEndpoint as exc:
            self.metrics.rejections.labels("no_endpoint").inc()
            if not self.pool.hosting(model) and model not in self.catalog:
                # nothing was ever reached: say so, it is the likely misconfiguration
                raise NoEndpoint(
                    f"no endpoint is reachable to serve model '{model}'", headers=exc.headers
                ) from None
            raise

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
        candidates = await self._candidates(ctx.model, len(raw))
        self._check_context(ctx, candidates)
        if ctx.parsed.engine_tokenize:
            assert self.scrape_client is not None, "Gateway.start() was not awaited"
            await self.prompts.from_engine(self.scrape_client, ctx.parsed, candidates[0].url, ctx.request_id)
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
                # a declared model whose endpoints all failed to connect (its only pod just died, an adapter is
                # being re-placed) is held for a fresh endpoint instead of answered 503
                refill=self._refill(ctx.model, len(raw)) if ctx.model in self.catalog else None,
            )
        except BaseException:
            ctx.finish()  # no-op if the proxy already reported the end
            raise

    def _refill(self, model: str, size: int) -> Refill:
        async def refill(tried: set[str]) -> list[Endpoint]:
            def fresh() -> list[Endpoint] | None:
                found = self._probe(model)
                untried = [e for e in found or () if e.key not in tried]
                return untried or None

            return await self.holding.wait(model, size, fresh)

        return refill

    def _count(self, status: int) -> None:
        self.requests += 1
        if status >= 500:
            self.errors += 1

    def models(self) -> dict[str, Any]:
        """What engines serve, plus what the control plane declares (a model at zero replicas, an adapter
        being placed): a client can list a model it may use, and a request for it is held, not refused."""
        cards: dict[str, dict[str, Any]] = {}
        for endpoint in self.pool:
            if not endpoint.healthy:
                continue
            for card in endpoint.cards:
                cards.setdefault(card["id"], card)
            if endpoint.spec.model and endpoint.spec.model not in cards and not endpoint.cards:
                cards[endpoint.spec.model] = {
                    "id": endpoint.spec.model,
                    "object": "model",
                    "owned_by": "flotilla",
                }
        for name, base in self.catalog.items():
            if name not in cards:
                declared: dict[str, Any] = {
                    "id": name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "flotilla",
                }
                if base is not None:
                    declared["parent"] = base
                    declared["root"] = name
                cards[name] = declared
        return {"object": "list", "data": sorted(cards.values(), key=lambda c: str(c["id"]))}

    def stats(self) -> GatewayStats:
        hits = queries = 0.0
        endpoints = []
        for e in self.pool:
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
