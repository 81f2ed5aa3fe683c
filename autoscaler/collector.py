"""Scraping a fleet: every pod's vLLM ``/metrics`` and every gateway's per-model demand, concurrently.

One implementation serves the operator's controller and the standalone/bench loop: the caller passes the
URLs it knows (the controller from pod IPs and gateway pods, ``flotilla up`` from the engines it started) and
an ``httpx.AsyncClient`` it owns, so tests can hand in any transport. Nothing here raises for a dead pod:
failures come back as data (``error`` set), because the scaler must treat a pod it could not read differently
from an idle one (it refuses to scale down on incomplete data).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from flotilla.demand import ModelDemand, parse_demand
from flotilla.vllm_metrics import EngineMetrics, MetricsError, scrape_metrics

__all__ = ["Collector", "GatewayScrape", "PodScrape", "Scrape", "gateway_metrics_url", "parse_finished"]


@dataclass(frozen=True, slots=True)
class PodScrape:
    """One engine pod: its base URL and its parsed metrics, or the error that prevented reading them."""

    url: str
    metrics: EngineMetrics | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class GatewayScrape:
    """One gateway: per-model demand from its ``/metrics``, or the error."""

    url: str
    demand: Mapping[str, ModelDemand] | None
    error: str | None = None
    #: requests the gateway has finished per model (cumulative ``flotilla_gateway_requests_total``)
    finished: Mapping[str, float] | None = None


#: the gateway's per-request counter (labels model, endpoint, status), counted when a request finishes
FINISHED_METRIC = "flotilla_gateway_requests_total"


def parse_finished(text: str) -> dict[str, float]:
    """Finished requests per model from a gateway's ``/metrics`` (summed over endpoints and statuses)."""
    wanted = [line for line in text.splitlines() if line.startswith(FINISHED_METRIC)]
    out: dict[str, float] = {}
    for family in text_string_to_metric_families("\n".join(wanted) + "\n"):
        for sample in family.samples:
            model = sample.labels.get("model")
            if model is not None and sample.name == FINISHED_METRIC:
                out[model] = out.get(model, 0.0) + sample.value
    return out


@dataclass(frozen=True, slots=True)
class Scrape:
    pods: tuple[PodScrape, ...] = ()
    gateways: tuple[GatewayScrape, ...] = ()

    @property
    def errors(self) -> list[str]:
        return [
            e for e in (*(p.error for p in self.pods), *(g.error for g in self.gateways)) if e is not None
        ]


def gateway_metrics_url(url: str) -> str:
    """``http://gw:8080`` → ``http://gw:8080/metrics``; a URL with a path is taken as the metrics URL."""
    return url.rstrip("/") + "/metrics" if urlsplit(url).path in ("", "/") else url


class Collector:
    """Scrapes pods (engine base URLs, ``/metrics`` appended) and gateways (see ``gateway_metrics_url``)."""

    def __init__(self, client: httpx.AsyncClient, *, timeout: float = 2.0) -> None:
        self.client = client
        self.timeout = timeout

    async def collect(self, pod_urls: Sequence[str], gateway_urls: Sequence[str] = ()) -> Scrape:
        pods = [self._pod(url) for url in pod_urls]
        gateways = [self._gateway(url) for url in gateway_urls]
        results = await asyncio.gather(*pods, *gateways)
        return Scrape(
            pods=tuple(r for r in results if isinstance(r, PodScrape)),
            gateways=tuple(r for r in results if isinstance(r, GatewayScrape)),
        )

    async def _pod(self, url: str) -> PodScrape:
        try:
            metrics = await scrape_metrics(self.client, url, request_timeout=self.timeout, latency=True)
        except MetricsError as exc:
            return PodScrape(url, None, str(exc))
        return PodScrape(url, metrics)

    async def _gateway(self, url: str) -> GatewayScrape:
        target = gateway_metrics_url(url)
        try:
            response = await self.client.get(target, timeout=self.timeout)
        except httpx.HTTPError as exc:
            return GatewayScrape(url, None, f"scraping {target} failed: {type(exc).__name__}: {exc}")
        if response.status_code != 200:
            return GatewayScrape(url, None, f"scraping {target} returned HTTP {response.status_code}")
        try:
            return GatewayScrape(url, parse_demand(response.text), finished=parse_finished(response.text))
        except ValueError as exc:
            return GatewayScrape(url, None, f"{target}: unreadable demand metrics: {exc}")
