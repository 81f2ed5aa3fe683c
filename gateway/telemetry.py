"""Prometheus metrics (one registry per app, so two apps in one process never collide) and JSON logs."""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Generic, TypeVar

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from flotilla import demand
from gateway.endpoints import EndpointPool

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_ITL = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.25, 0.5, 1.0, 2.5)
_DECISION = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05)
_RATIO = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)
#: ``flotilla_gateway_endpoint_breaker_state`` values (ordered by how much traffic the breaker lets through)
BREAKER_STATES = {"closed": 0.0, "half-open": 1.0, "open": 2.0}


class _EndpointCollector(Collector):
    def __init__(self, pool: EndpointPool) -> None:
        self.pool = pool

    def collect(self) -> Iterable[GaugeMetricFamily]:
        in_flight = GaugeMetricFamily(
            "flotilla_gateway_endpoint_in_flight", "Requests in flight per endpoint", labels=["endpoint"]
        )
        healthy = GaugeMetricFamily(
            "flotilla_gateway_endpoint_healthy", "1 if the endpoint is in rotation", labels=["endpoint"]
        )
        blocks = GaugeMetricFamily(
            "flotilla_gateway_endpoint_active_blocks",
            "KV blocks of in-flight requests (gateway's count)",
            labels=["endpoint"],
        )
        pending = GaugeMetricFamily(
            "flotilla_gateway_endpoint_pending_prefill_blocks",
            "Uncached prompt blocks of in-flight requests that have no first byte yet (ttft-cost's queue)",
            labels=["endpoint"],
        )
        breaker = GaugeMetricFamily(
            "flotilla_gateway_endpoint_breaker_state",
            "Circuit breaker of the endpoint: 0 closed, 1 half-open (the next request is a trial), 2 open",
            labels=["endpoint"],
        )
        for e in self.pool:
            in_flight.add_metric([e.key], e.in_flight)
            healthy.add_metric([e.key], 1.0 if e.available else 0.0)
            blocks.add_metric([e.key], e.active_blocks)
            pending.add_metric([e.key], e.pending_blocks)
            breaker.add_metric([e.key], BREAKER_STATES[e.breaker.state])
        return [in_flight, healthy, blocks, pending, breaker]


class _DemandCollector(Collector):
    """Per-model demand (flotilla/demand.py): held and dispatched requests; declared models export 0 too, so
    the series exist before the first request and an autoscaler sees an explicit zero."""

    def __init__(
        self,
        queued: Mapping[str, int],
        in_flight: Mapping[str, int],
        arrivals: Mapping[str, int],
        declared: Callable[[], Iterable[str]],
    ) -> None:
        self.queued, self.in_flight, self.arrivals, self.declared = queued, in_flight, arrivals, declared

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        queued = GaugeMetricFamily(
            demand.QUEUED_METRIC, "Requests held because no ready endpoint serves the model", labels=["model"]
        )
        in_flight = GaugeMetricFamily(
            demand.IN_FLIGHT_METRIC, "Requests dispatched to an engine and not finished", labels=["model"]
        )
        arrivals = CounterMetricFamily(
            demand.ARRIVALS_METRIC.removesuffix("_total"),
            "Requests that arrived for the model (routable or held)",
            labels=["model"],
        )
        for model in sorted(
            set(self.queued) | set(self.in_flight) | set(self.arrivals) | set(self.declared())
        ):
            queued.add_metric([model], self.queued.get(model, 0))
            in_flight.add_metric([model], self.in_flight.get(model, 0))
            arrivals.add_metric([model], self.arrivals.get(model, 0))
        return [queued, in_flight, arrivals]


class _BackendErrors(Collector):
    def __init__(self, sources: Mapping[str, Callable[[], int]]) -> None:
        self.sources = sources

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily(
            "flotilla_gateway_backend_errors",
            "Shared index / rate-limit store failures (a per-replica fallback was used)",
            labels=["backend"],
        )
        for name, read in self.sources.items():
            family.add_metric([name], read())
        return [family]


class _StatsCollector(Collector):
    """Exports the integer fields of a component's ``stats`` dataclass (KV-event subscriber, Redis index)."""

    def __init__(self, name: str, owner: object) -> None:
        self.name = name
        self.owner = owner

    def collect(self) -> Iterable[CounterMetricFamily]:
        stats = getattr(self.owner, "stats", None)
        if stats is None or not dataclasses.is_dataclass(stats):
            return []
        family = CounterMetricFamily(self.name, f"{self.name} counters", labels=["counter"])
        for f in dataclasses.fields(stats):
            value = getattr(stats, f.name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                family.add_metric([f.name], value)
        return [family]


M = TypeVar("M", bound=MetricWrapperBase)


class Children(Generic[M]):
    """A labelled metric's children by label values, resolved once.

    ``metric.labels(...)`` validates the values, builds a tuple and takes the metric's lock on every call
    (~2–3 µs); a request resolves several children, so the per-request ones go through this dict (~0.1 µs).
    Bounded exactly as the metric is: it keeps one child per label combination it ever saw anyway.
    """

    __slots__ = ("_children", "metric")

    def __init__(self, metric: M) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


class GatewayMetrics:
    def __init__(self, pool: EndpointPool) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "flotilla_gateway_requests",
            "Requests by model, endpoint and status",
            ["model", "endpoint", "status"],
            registry=r,
        )
        self.ttft = Histogram(
            "flotilla_gateway_ttft_seconds",
            "Time to first byte of the upstream body",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.itl = Histogram(
            "flotilla_gateway_itl_seconds",
            "Time between streamed chunks",
            ["model"],
            buckets=_ITL,
            registry=r,
        )
        self.e2e = Histogram(
            "flotilla_gateway_e2e_seconds",
            "Request duration at the gateway",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.decision = Histogram(
            "flotilla_gateway_routing_decision_seconds",
            "Routing decision time",
            ["profile"],
            buckets=_DECISION,
            registry=r,
        )
        self.match_ratio = Histogram(
            "flotilla_gateway_prefix_match_ratio",
            "Matched ÷ total prompt blocks on the chosen endpoint",
            buckets=_RATIO,
            registry=r,
        )
        self.retries = Counter(
            "flotilla_gateway_retries", "Retries on another endpoint, by reason", ["reason"], registry=r
        )
        self.rejections = Counter(
            "flotilla_gateway_rejections",
            "Requests refused by the gateway, by reason",
            ["reason"],
            registry=r,
        )
        self.stream_errors = Counter(
            "flotilla_gateway_stream_errors", "Streams ended by an upstream failure", ["endpoint"], registry=r
        )
        #: the children resolved on every request (see :class:`Children`)
        self.requests_of = Children(self.requests)
        self.e2e_of = Children(self.e2e)
        self.decision_of = Children(self.decision)
        self.up = Gauge("flotilla_gateway_started_timestamp_seconds", "When this gateway started", registry=r)
        self.up.set(time.time())
        r.register(_EndpointCollector(pool))

    def watch_demand(
        self,
        queued: Mapping[str, int],
        in_flight: Mapping[str, int],
        arrivals: Mapping[str, int],
        declared: Callable[[], Iterable[str]],
    ) -> None:
        """Export per-model demand (flotilla/demand.py), read live from the gateway's own counters."""
        self.registry.register(_DemandCollector(queued, in_flight, arrivals, declared))

    def watch_backend_errors(self, sources: Mapping[str, Callable[[], int]]) -> None:
        """``flotilla_gateway_backend_errors_total{backend}``: failures of the shared stores (a fallback was
        used), read from the stores' own counters."""
        self.registry.register(_BackendErrors(sources))

    def watch(self, name: str, owner: object) -> None:
        """Export ``owner.stats`` (e.g. the KV-event subscriber's) as ``flotilla_gateway_<name>_total``."""
        self.registry.register(_StatsCollector(f"flotilla_gateway_{name}", owner))


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra fields passed as ``extra={"fields": {...}}`` are merged in."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


#: loggers of the gateway process: its own and the prefix index's (Redis, KV events), all formatted alike
GATEWAY_LOGGERS = ("flotilla.gateway", "flotilla.kvcache")


def configure_logging(json_logs: bool, level: str) -> Callable[[], None]:
    """Attach one handler to the gateway's loggers (:data:`GATEWAY_LOGGERS`); returns a function that detaches it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json_logs else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    loggers = [logging.getLogger(name) for name in GATEWAY_LOGGERS]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(level.upper())
        logger.propagate = False

    def detach() -> None:
        for logger in loggers:
            logger.removeHandler(handler)

    return detach


@dataclasses.dataclass(frozen=True, slots=True)
class EndpointStats:
    key: str
    healthy: bool
    in_flight: int
    served: int
    models: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class GatewayStats:
    """A cheap snapshot for status lines (``flotilla up``)."""

    requests: int
    errors: int
    endpoints: tuple[EndpointStats, ...]
    #: engine-side prefix-cache hit ratio (Σ hits ÷ Σ queries over scraped counters), None before data
    engine_prefix_hit_ratio: float | None
    #: mean matched ÷ total prompt blocks on the chosen endpoint, over routed requests
    routed_match_ratio: float | None
