"""The gateway's own account of its load and breakers, read from its ``/metrics`` after the load drained.

Per endpoint: ``flotilla_gateway_endpoint_in_flight``, ``_active_blocks``, ``_pending_prefill_blocks``,
``_healthy`` and ``_breaker_state`` (0 closed, 1 half-open, 2 open); per model, the demand gauges
(flotilla/demand.py: requests in flight and held). A leaked lease shows as a counter that never returns to 0;
a stuck breaker as a state that stays above 0 while its engine is healthy.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from flotilla.demand import parse_demand

_PREFIX = "flotilla_gateway_endpoint_"
_REQUESTS = "flotilla_gateway_requests_total"
BREAKER_NAMES = {0: "closed", 1: "half-open", 2: "open"}


@dataclass
class EndpointState:
    """One endpoint's gauges; a gauge the gateway did not export stays NaN, which never counts as settled."""

    endpoint: str
    in_flight: float = math.nan
    active_blocks: float = math.nan
    pending_prefill_blocks: float = math.nan
    healthy: float = math.nan
    breaker_state: float = math.nan

    @property
    def breaker(self) -> str:
        if math.isnan(self.breaker_state):
            return "not exported"
        return BREAKER_NAMES.get(int(self.breaker_state), f"{self.breaker_state:g}")

    @property
    def drained(self) -> bool:
        return self.in_flight == 0 and self.active_blocks == 0 and self.pending_prefill_blocks == 0

    @property
    def recovered(self) -> bool:
        return self.healthy == 1 and self.breaker_state == 0


@dataclass
class GatewayState:
    endpoints: list[EndpointState] = field(default_factory=list)
    model_in_flight: float = 0.0
    model_queued: float = 0.0
    #: requests the gateway sent to each endpoint so far (``flotilla_gateway_requests_total``, every model and
    #: status): where its router is sending traffic
    routed: dict[str, float] = field(default_factory=dict)

    @property
    def settled(self) -> bool:
        return (
            bool(self.endpoints)
            and all(e.drained and e.recovered for e in self.endpoints)
            and self.model_in_flight == 0
            and self.model_queued == 0
        )


def parse_state(text: str) -> GatewayState:
    wanted = [line for line in text.splitlines() if line.startswith((_PREFIX, _REQUESTS))]
    by_key: dict[str, EndpointState] = {}
    routed: dict[str, float] = {}
    for family in text_string_to_metric_families("\n".join(wanted) + "\n"):
        for sample in family.samples:
            key = sample.labels.get("endpoint")
            if sample.name == _REQUESTS:
                if key:
                    routed[key] = routed.get(key, 0.0) + sample.value
                continue
            attr = sample.name.removeprefix(_PREFIX)
            if key is None or attr not in EndpointState.__dataclass_fields__ or attr == "endpoint":
                continue
            setattr(by_key.setdefault(key, EndpointState(key)), attr, sample.value)
    demand = parse_demand(text).values()
    return GatewayState(
        endpoints=sorted(by_key.values(), key=lambda e: e.endpoint),
        model_in_flight=sum(d.in_flight for d in demand),
        model_queued=sum(d.queued for d in demand),
        routed=routed,
    )


async def read_state(client: httpx.AsyncClient, gateway_url: str) -> GatewayState:
    response = await client.get(gateway_url.rstrip("/") + "/metrics")
    response.raise_for_status()
    return parse_state(response.text)


async def wait_settled(
    client: httpx.AsyncClient, gateway_url: str, *, within: float, interval: float = 0.25
) -> tuple[GatewayState, GatewayState, float | None]:
    """(state when the load drained, last state seen, seconds until settled or None if it never did)."""
    start = time.perf_counter()
    first = last = await read_state(client, gateway_url)
    while not last.settled:
        if time.perf_counter() - start >= within:
            return first, last, None
        await asyncio.sleep(interval)
        last = await read_state(client, gateway_url)
    return first, last, time.perf_counter() - start
