"""The engines behind one gateway, and the requests waiting for one of them.

Discovery (a static list, Kubernetes pods, ``flotilla up``) sets the endpoint set; the scraper keeps each
endpoint's health, served models and metrics; the catalog says what the control plane declares even while
nothing serves it (a model at zero replicas, an adapter being placed). The request pipeline asks one question
of all this, :meth:`Fleet.candidates`: which endpoints can take this model now — holding the request while the
answer is "none yet, but soon" (gateway/holding.py) and raising the error it should get otherwise.

What depends on the endpoint set beyond this (the prefix index, the KV-event subscriber, routing profiles asked
for by pods) belongs to the gateway (gateway/service.py): :meth:`Fleet.set_endpoints` returns the endpoints
that left, and :meth:`Fleet.start` takes the gateway's callbacks for an endpoint turning unhealthy and for the
end of each scrape.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from gateway.catalog import Catalog
from gateway.discovery.static import static_specs
from gateway.endpoints import Endpoint, EndpointPool, EndpointSpec
from gateway.errors import ModelNotFound, NoEndpoint
from gateway.holding import Holding
from gateway.proxy import Refill
from gateway.scraper import Scraper
from gateway.settings import GatewaySettings
from gateway.telemetry import GatewayMetrics
from gateway.upstream import make_transport


class Fleet:
    def __init__(
        self,
        settings: GatewaySettings,
        pool: EndpointPool,
        metrics: GatewayMetrics,
        *,
        spawn: Callable[[Awaitable[Any]], None],
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.metrics = metrics
        self.spawn = spawn
        #: models and adapters the control plane declares, served or not (gateway/catalog.py)
        self.catalog = Catalog()
        self.holding: Holding[list[Endpoint]] = Holding(
            timeout=settings.hold_timeout,
            max_queued=settings.hold_max_queued,
            max_bytes=settings.hold_max_bytes,
            retry_after=settings.retry_after,
            refresh=self.refresh,
            clock=clock,
        )
        #: requests that arrived per routable or declared model (a counter: the autoscaler's offered load)
        self.arrivals: dict[str, int] = {}
        #: the endpoint set is known (static engines at once; Kubernetes after the first pod list)
        self.discovered = not settings.kubernetes
        self.scrape_client: httpx.AsyncClient | None = None
        self.scraper: Scraper | None = None
        for spec in static_specs(settings.engines, settings.engines_file, settings.kv_events):
            pool.upsert(spec)

    # ------------------------------------------------------------------ lifecycle
    async def start(
        self,
        *,
        on_unhealthy: Callable[[Endpoint], Awaitable[None]],
        on_scraped: Callable[[], Awaitable[None]],
    ) -> None:
        """Scrape every endpoint once (models and health known before the first request), then keep scraping."""
        s = self.settings
        # trust_env=False: engines are dialled directly, never through an HTTP(S)_PROXY from the environment;
        # the scrapes (/health + /metrics per engine per interval) ride the same kind of pool as the proxy
        self.scrape_client = httpx.AsyncClient(
            timeout=s.scrape_timeout,
            trust_env=False,
            transport=make_transport(s.transport, max_connections=s.max_connections),
        )

        async def scraped() -> None:
            self.holding.wake()
            await on_scraped()

        self.scraper = Scraper(
            self.pool,
            self.scrape_client,
            interval=s.scrape_interval,
            timeout=s.scrape_timeout,
            models_interval=s.models_interval,
            unhealthy_after=s.unhealthy_after,
            on_unhealthy=on_unhealthy,
            on_scraped=scraped,
        )
        await self.scraper.scrape_all()
        self.spawn(self.scraper.run())

    async def stop(self) -> None:
        if self.scrape_client is not None:
            await self.scrape_client.aclose()

    def set_endpoints(self, specs: list[EndpointSpec]) -> list[str]:
        """Replace the endpoint set; new endpoints are scraped right away. Returns the keys of those removed."""
        assert self.scraper is not None, "Fleet.start() was not awaited"
        self.discovered = True
        removed = self.pool.replace_all(specs)
        for endpoint in self.pool:
            if not endpoint.models_known:
                self.spawn(self.scraper.scrape_one(endpoint))
        self.holding.wake()
        return removed

    async def refresh(self, model: str) -> None:
        """Re-read, now, the endpoints that could start serving ``model`` (held requests wait on them):
        those not reached or not healthy yet, and for an adapter those of its base model."""
        if self.scraper is None:
            return
        base = self.catalog.base_of(model)
        due = [
            e
            for e in self.pool
            if not e.models_known or not e.healthy or (base is not None and e.serves(base))
        ]
        for endpoint in due:
            self.scraper.forget_models(endpoint)  # re-read /v1/models on this scrape
        if due:
            scraper = self.scraper
            await asyncio.gather(*(scraper.scrape_one(e) for e in due))

    # ------------------------------------------------------------------ requests
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

    async def candidates(self, model: str, size: int) -> list[Endpoint]:
        """The endpoints that can take a request for ``model`` (a body of ``size`` bytes), held until some can."""
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

    def refill(self, model: str, size: int) -> Refill | None:
        """For a declared model: fresh endpoints when every one tried failed to connect (its only pod just
        died, an adapter is being re-placed), held for as a new request would be. None for other models."""
        if model not in self.catalog:
            return None

        async def refill(tried: set[str]) -> list[Endpoint]:
            def fresh() -> list[Endpoint] | None:
                found = self._probe(model)
                untried = [e for e in found or () if e.key not in tried]
                return untried or None

            return await self.holding.wait(model, size, fresh)

        return refill

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
