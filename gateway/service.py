"""The gateway at run time: endpoints, indexes, router, proxy, limits — owned by one object per app.

``create_app`` builds a :class:`Gateway` from settings; the lifespan starts and stops it. Nothing lives at
module level, so several differently configured gateways can run in one process (tests, ``flotilla up``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.responses import Response

from flotilla.tokenizer import load_tokenizer
from gateway.auth import KeyStore
from gateway.discovery.static import static_specs
from gateway.endpoints import Endpoint, EndpointPool, EndpointSpec
from gateway.errors import BadRequest, ModelNotFound, NoEndpoint, RateLimited
from gateway.index import build_index, build_subscriber, start_index
from gateway.parsing import ParsedRequest, parse
from gateway.proxy import Attempt, Proxy, RetryBudget
from gateway.ratelimit import Limiter, MemoryLimiter, RedisLimiter
from gateway.routing import Router, RoutingRequest
from gateway.scraper import Scraper
from gateway.settings import GatewaySettings
from gateway.telemetry import GatewayMetrics
from gateway.upstream import make_transport
from kvcache import KVEventSubscriber, MemoryIndex, PrefixIndex, block_hashes

log = logging.getLogger("flotilla.gateway")

#: upstream request headers copied from the client (everything else is dropped; the body is forwarded as is)
_FORWARDED = ("content-type", "accept", "user-agent", "x-session-id", "traceparent", "tracestate")


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
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.pool = EndpointPool(
            breaker_failures=settings.breaker_failures, breaker_cooldown=settings.breaker_cooldown
        )
        self.metrics = GatewayMetrics(self.pool)
        self.router = Router(
            profiles=settings.profiles,
            default_profile=settings.default_profile,
            model_profiles=settings.model_profiles,
            prefix_mode=settings.prefix_mode,
        )
        self.tokenizer = load_tokenizer(settings.tokenizer)
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
        if settings.ratelimit_backend == "redis" and not settings.redis_url:
            raise ValueError("ratelimit_backend 'redis' needs redis_url")
        self.transport: httpx.AsyncBaseTransport | None = None
        self.scrape_client: httpx.AsyncClient | None = None
        self.proxy: Proxy | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watcher: Any = None
        self.requests = 0
        self.errors = 0
        self._match_sum = 0.0
        self._match_n = 0
        for spec in static_specs(settings.engines, settings.engines_file, settings.kv_events):
            self.pool.upsert(spec)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        s = self.settings
        self.transport = make_transport(s.transport, max_connections=s.max_connections)
        # trust_env=False: engines are dialled directly, never through an HTTP(S)_PROXY from the environment
        self.scrape_client = httpx.AsyncClient(timeout=s.scrape_timeout, trust_env=False)
        self.proxy = Proxy(
            self.transport,
            self.metrics,
            max_retries=s.max_retries,
            budget=RetryBudget(s.retry_budget_ratio, s.retry_budget_min),
            first_byte_timeout=s.first_byte_timeout,
            stream_idle_timeout=s.stream_idle_timeout,
            connect_timeout=s.connect_timeout,
            retry_after=s.retry_after,
        )
        self.scraper = Scraper(
            self.pool,
            self.scrape_client,
            interval=s.scrape_interval,
            timeout=s.scrape_timeout,
            models_interval=s.models_interval,
            unhealthy_after=s.unhealthy_after,
            on_unhealthy=self._forget,
        )
        await start_index(self.index)
        self.metrics.watch("prefix_index", self.index)
        if s.prefix_mode == "precise":
            self.precise_index = MemoryIndex()
            self.subscriber = build_subscriber(self.precise_index, block_size=s.block_size, seed=s.hash_seed)
            self.scraper.on_scraped = self._sync_subscriber
            self.metrics.watch("kv_events", self.subscriber)
        await self.scraper.scrape_all()  # know models and health before the first request
        self._spawn(self.scraper.run())
        if s.kubernetes:
            from gateway.discovery.kube import PodWatcher

            self._watcher = PodWatcher(
                asyncio.get_running_loop(),
                self.set_endpoints,
                namespace=s.namespace,
                label_selector=s.label_selector,
                kubeconfig=s.kubeconfig,
            )
            self._watcher.start()

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        for task in self._tasks:
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.subscriber is not None:
            await self.subscriber.close()
        if self.transport is not None:
            await self.transport.aclose()
        for closeable in (self.scrape_client,):
            if closeable is not None:
                await closeable.aclose()
        await self.index.close()
        await self.limiter.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def set_endpoints(self, specs: list[EndpointSpec]) -> None:
        """Replace the endpoint set (Kubernetes discovery); new endpoints are scraped right away."""
        for key in self.pool.replace_all(specs):
            self._spawn(self.index.remove_endpoint(key))
            if self.subscriber is not None:
                self._spawn(self.subscriber.remove_endpoint(key))
        for endpoint in self.pool:
            if not endpoint.models_known:
                self._spawn(self.scraper.scrape_one(endpoint))

    async def _forget(self, endpoint: Endpoint) -> None:
        await self.index.remove_endpoint(endpoint.key)

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

    def _candidates(self, model: str) -> list[Endpoint]:
        hosting = self.pool.hosting(model)
        if not hosting and any(not e.models_known for e in self.pool):
            # some endpoint was never reached, so "unknown model" cannot be told from "fleet down"
            self.metrics.rejections.labels("no_endpoint").inc()
            raise NoEndpoint(
                f"no endpoint is reachable to serve model '{model}'",
                headers={"retry-after": str(self.settings.retry_after)},
            )
        if not hosting:
            self.metrics.rejections.labels("model_not_found").inc()
            raise ModelNotFound(f"The model `{model}` does not exist.", param="model")
        available = [e for e in hosting if e.available]
        if not available:
            self.metrics.rejections.labels("no_endpoint").inc()
            raise NoEndpoint(
                f"no healthy endpoint can serve model '{model}' right now",
                headers={"retry-after": str(self.settings.retry_after)},
            )
        return available

    async def handle(self, path: str, kind: str, raw: bytes, headers: Any) -> Response:
        started = time.perf_counter()
        request_id = headers.get("x-request-id") or uuid.uuid4().hex
        key = self.keys.authenticate(headers.get("authorization"))
        parsed: ParsedRequest = parse(raw, kind, self.tokenizer)
        limit_headers: dict[str, str] = {}
        rpm = (key.rpm if key else None) or self.settings.rpm_limit
        tpm = (key.tpm if key else None) or self.settings.tpm_limit
        if rpm or tpm:
            key_id = key.digest[:16] if key else "anonymous"
            verdict = await self.limiter.acquire(key_id, parsed.prompt_tokens + parsed.max_tokens, rpm, tpm)
            limit_headers = verdict.headers
            if not verdict.allowed:
                self.metrics.rejections.labels("rate_limited").inc()
                raise RateLimited(
                    f"rate limit reached for key '{key.name if key else 'anonymous'}' (rpm {rpm}, tpm {tpm})",
                    headers=limit_headers,
                )
        profile = self.router.profile_for(parsed.model, headers.get("x-routing-strategy"))
        if profile is None:
            self.metrics.rejections.labels("bad_strategy").inc()
            raise BadRequest(
                f"unknown routing strategy {headers.get('x-routing-strategy')!r}; "
                f"known: {', '.join(sorted(self.router.profiles))}",
                param="x-routing-strategy",
            )
        candidates = self._candidates(parsed.model)
        s = self.settings
        hashes = block_hashes(
            parsed.prompt_ids[: s.max_prefix_blocks * s.block_size],
            block_size=s.block_size,
            seed=s.hash_seed,
            scope=parsed.model,
        )
        routing = RoutingRequest(
            model=parsed.model,
            prompt_tokens=len(parsed.prompt_ids),
            hashes=hashes,
            block_size=s.block_size,
            max_tokens=parsed.max_tokens,
            session_id=headers.get("x-session-id"),
            is_adapter=any(parsed.model in e.adapters for e in candidates),
        )
        decision = await self.router.route(profile, routing, candidates, self._match)
        self.metrics.decision.labels(decision.profile).observe(decision.seconds)
        if decision.match_ratio is not None:
            self.metrics.match_ratio.observe(decision.match_ratio)
            self._match_sum += decision.match_ratio
            self._match_n += 1
        if hashes:  # approximate mode learns from the decision, before the response, so bursts see it
            await self.index.record(decision.ranked[0].key, hashes)
        upstream_headers = {h: headers[h] for h in _FORWARDED if h in headers}
        upstream_headers["x-request-id"] = request_id
        upstream_headers["accept-encoding"] = "identity"  # bodies are relayed as raw bytes
        attempt = Attempt(
            model=parsed.model,
            blocks=routing.blocks,
            request_id=request_id,
            prompt_blocks=-(-routing.prompt_tokens // routing.block_size),
            matches=routing.matches,
        )

        def done(a: Attempt) -> None:
            self.requests += 1
            status = str(a.status)
            if a.status >= 500:
                self.errors += 1
            endpoint = a.endpoint.key if a.endpoint else "none"
            if hashes and a.endpoint is not None and a.endpoint is not decision.ranked[0] and a.status < 400:
                # a retry served it elsewhere: that engine now holds the prefix too
                self._spawn(self.index.record(a.endpoint.key, hashes))
            self.metrics.requests.labels(a.model, endpoint, status).inc()
            elapsed = time.perf_counter() - started
            self.metrics.e2e.labels(a.model).observe(elapsed)
            log.info(
                "%s %s -> %s %s",
                path,
                a.model,
                endpoint,
                status,
                extra={
                    "fields": {
                        "request_id": a.request_id,
                        "model": a.model,
                        "endpoint": endpoint,
                        "status": a.status,
                        "tries": a.tries,
                        "strategy": decision.profile,
                        "stream": parsed.stream,
                        "prompt_tokens": parsed.prompt_tokens,
                        "key": key.name if key else None,
                        "duration_ms": round(elapsed * 1000, 2),
                    }
                },
            )

        assert self.proxy is not None, "Gateway.start() was not awaited"
        response = await self.proxy.forward(
            decision.ranked, path, raw, upstream_headers, stream=parsed.stream, attempt=attempt, on_done=done
        )
        response.headers.update(limit_headers)
        return response

    def models(self) -> dict[str, Any]:
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
