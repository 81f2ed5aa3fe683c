"""Background scraping of every endpoint's ``/metrics`` (load, KV usage, LoRA slots) and ``/v1/models``.

Each scrape also reads ``/health`` (vLLM answers 200 while the engine loop is alive), so the scrape doubles as
the active health check: ``unhealthy_after`` consecutive failures take an endpoint out
of rotation (and forget what the approximate index believed it cached: a restarted engine has an empty
cache); the first success puts it back. Passive checks (connect errors, 5xx) act through the circuit breaker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson

from flotilla.vllm_metrics import MetricsError, scrape_metrics
from gateway.endpoints import Endpoint, EndpointPool

log = logging.getLogger("flotilla.gateway")


def parse_models(payload: Any) -> tuple[frozenset[str], frozenset[str], list[dict[str, Any]]]:
    """(all model ids, adapter ids, cards) from a ``/v1/models`` body; adapters are cards with a parent."""
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise ValueError("not an OpenAI model list")
    cards = [c for c in payload["data"] if isinstance(c, dict) and isinstance(c.get("id"), str)]
    ids = frozenset(c["id"] for c in cards)
    adapters = frozenset(c["id"] for c in cards if c.get("parent"))
    return ids, adapters, cards


class Scraper:
    def __init__(
        self,
        pool: EndpointPool,
        client: httpx.AsyncClient,
        *,
        interval: float,
        timeout: float,
        models_interval: float,
        unhealthy_after: int,
        on_unhealthy: Callable[[Endpoint], Awaitable[None]] | None = None,
        on_scraped: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.pool = pool
        self.client = client
        self.interval = interval
        self.timeout = timeout
        self.models_interval = models_interval
        self.unhealthy_after = unhealthy_after
        self.on_unhealthy = on_unhealthy
        self._models_at: dict[str, float] = {}
        #: called after every full scrape (the gateway syncs KV-event subscriptions and wakes held requests)
        self.on_scraped = on_scraped

    async def run(self) -> None:
        while True:
            try:
                await self.scrape_all()
            except Exception:  # a bug here must not freeze every endpoint's health: log it and keep going
                log.exception("scrape cycle failed")
            await asyncio.sleep(self.interval)

    async def scrape_all(self) -> None:
        endpoints = list(self.pool)
        if endpoints:
            await asyncio.gather(*(self.scrape_one(e) for e in endpoints))
        if self.on_scraped is not None:
            await self.on_scraped()

    async def scrape_one(self, endpoint: Endpoint) -> None:
        try:
            now = time.monotonic()
            if (
                not endpoint.models_known
                or now - self._models_at.get(endpoint.key, 0.0) >= self.models_interval
            ):
                await self._models(endpoint)
                self._models_at[endpoint.key] = now
            health = await self.client.get(endpoint.url + "/health", timeout=self.timeout)
            if health.status_code != 200:
                raise ValueError(f"/health returned HTTP {health.status_code}")
            endpoint.metrics = await scrape_metrics(self.client, endpoint.url, request_timeout=self.timeout)
            endpoint.metrics_at = time.monotonic()
        except (MetricsError, httpx.HTTPError, ValueError) as exc:
            endpoint.scrape_failures += 1
            if endpoint.healthy and endpoint.scrape_failures >= self.unhealthy_after:
                endpoint.healthy = False
                log.warning("endpoint %s unhealthy: %s", endpoint.key, exc)
                if self.on_unhealthy is not None:
                    await self.on_unhealthy(endpoint)
            return
        endpoint.scrape_failures = 0
        if not endpoint.healthy:
            log.info("endpoint %s healthy (%s)", endpoint.key, ", ".join(sorted(endpoint.models)))
            endpoint.healthy = True
            endpoint.breaker.on_success()

    def forget_models(self, endpoint: Endpoint) -> None:
        """Make the next :meth:`scrape_one` of ``endpoint`` re-read ``/v1/models`` (an adapter may be loading)."""
        self._models_at.pop(endpoint.key, None)

    async def _models(self, endpoint: Endpoint) -> None:
        response = await self.client.get(endpoint.url + "/v1/models", timeout=self.timeout)
        if response.status_code != 200:
            raise ValueError(f"/v1/models returned HTTP {response.status_code}")
        ids, adapters, cards = parse_models(orjson.loads(response.content))
        endpoint.models, endpoint.adapters, endpoint.cards = ids, adapters, cards
        endpoint.models_known = True
