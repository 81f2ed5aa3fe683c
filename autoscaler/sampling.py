"""From one scrape of a fleet to the load each metric sees: fleet totals, counter and histogram deltas.

**Load is a fleet total.** Each metric's value is the sum over the pods that answered (requests waiting,
running, KV-cache fractions, requests per second) or the gateways' queued + in-flight requests for the model,
so a policy wants ``ceil(total ÷ per-pod target)`` pods. Totals rather than per-pod averages matter while pods
start: a pod that is not ready yet carries no load and must not dilute an average into a scale-down, and a
window of totals stays meaningful when the pod count changes inside it (AIBrix averages per-pod values and then
treats them as totals, a known bug). TTFT is a latency, not an additive load: its value is
``p95 × pods that reported``, which makes the same formula HPA's ratio rule ``ceil(pods × p95 ÷ target)``.

**Deltas, not cumulative values.** Request rate and TTFT come from counters and a histogram that only grow, so
the sampler keeps each pod's previous reading and uses the difference; a pod seen for the first time gives no
delta yet, and a counter that went down (engine restart) restarts from the new reading. The TTFT quantile is
Prometheus' ``histogram_quantile`` (linear inside the bucket) over the bucket deltas of all pods merged.

**Arrivals** at the gateways are not counted anywhere, but requests are conserved: every request that arrived
since the last tick either finished (``flotilla_gateway_requests_total`` grew) or is still queued or in flight
(demand grew), so ``arrivals = Δfinished + Δ(queued + in flight)`` per gateway, divided by the time between
the two scrapes. A gateway seen for the first time gives no rate yet; one whose counter went down restarted,
and everything it reports is new.

**Present vs absent.** A metric with no data this tick (no request got a first token, every pod failed, no
gateway answered) is left out rather than reported as zero, so a blind spot never looks like an idle fleet.
With no pods at all the engine totals are a true zero.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from autoscaler.collector import Scrape
from autoscaler.settings import ARRIVALS, DEMAND, KV_CACHE, RPS, RUNNING, TTFT_P95, WAITING

__all__ = ["FleetSample", "Sampler", "histogram_quantile"]


@dataclass(frozen=True, slots=True)
class FleetSample:
    """The fleet at one instant, as the scaler consumes it."""

    #: pods that answered the scrape
    ready: int
    #: metric name → fleet total (see the module docstring); a missing key means "no data this tick"
    values: Mapping[str, float] = field(default_factory=dict)
    #: requests the gateways hold for the model because no ready pod serves it
    queued: float = 0.0
    #: requests the gateways have dispatched to engines and not finished
    in_flight: float = 0.0
    #: pods that were scraped and did not answer (the scaler will not scale down on such a tick)
    missing: int = 0
    #: any traffic at all: something waiting, running, queued, in flight, or finished since the last tick
    busy: bool = False


def histogram_quantile(q: float, buckets: Collection[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile`` over cumulative (upper bound, count) pairs; None with no counts."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower  # the quantile lies in the +Inf bucket: the largest finite bound is all we know
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


@dataclass(frozen=True, slots=True)
class _GatewayReading:
    at: float
    finished: float
    demand: float


@dataclass(frozen=True, slots=True)
class _Reading:
    at: float
    finished: float
    ttft: tuple[tuple[float, float], ...]


def _bucket_delta(
    now: tuple[tuple[float, float], ...], before: tuple[tuple[float, float], ...]
) -> dict[float, float]:
    old = dict(before)
    if any(count < old.get(bound, 0.0) for bound, count in now):
        return dict(now)  # counter reset: the engine restarted, everything it has counted is new
    return {bound: count - old.get(bound, 0.0) for bound, count in now}


class Sampler:
    """Turns successive scrapes of one model's fleet into ``FleetSample``s (keeps per-pod previous readings).

    ``models`` are the names the gateways count demand under (the served model name, plus adapter names if
    demand for adapters should count too).
    """

    def __init__(self, models: Collection[str]) -> None:
        self.models = frozenset(models)
        self._previous: dict[str, _Reading] = {}
        self._gateways: dict[str, _GatewayReading] = {}

    def sample(self, scrape: Scrape, now: float) -> FleetSample:
        values: dict[str, float] = {}
        answered = [p for p in scrape.pods if p.metrics is not None]
        missing = len(scrape.pods) - len(answered)
        if answered or not scrape.pods:
            values[WAITING] = sum(p.metrics.waiting for p in answered if p.metrics)
            values[RUNNING] = sum(p.metrics.running for p in answered if p.metrics)
            values[KV_CACHE] = sum(p.metrics.kv_usage for p in answered if p.metrics)
        rate = 0.0
        rated = 0
        merged: dict[float, float] = {}
        reporting = 0
        current: dict[str, _Reading] = {}
        for pod in answered:
            assert pod.metrics is not None
            reading = _Reading(now, pod.metrics.requests_finished, pod.metrics.ttft_buckets)
            current[pod.url] = reading
            before = self._previous.get(pod.url)
            if before is None or reading.at <= before.at:
                continue
            finished = reading.finished - before.finished
            rate += (finished if finished >= 0 else reading.finished) / (reading.at - before.at)
            rated += 1
            delta = _bucket_delta(reading.ttft, before.ttft)
            if delta and max(delta.values()) > 0:
                reporting += 1
                for bound, count in delta.items():
                    merged[bound] = merged.get(bound, 0.0) + count
        # keep readings of pods that failed this once, so one timeout does not cost the next delta
        failed = {p.url for p in scrape.pods if p.metrics is None}
        self._previous = {url: r for url, r in self._previous.items() if url in failed} | current
        if rated or not scrape.pods:
            values[RPS] = rate
        p95 = histogram_quantile(0.95, merged.items())
        if p95 is not None and reporting:
            values[TTFT_P95] = p95 * reporting
        answered_gateways = [g.demand for g in scrape.gateways if g.demand is not None]
        queued = sum(d[m].queued for d in answered_gateways for m in self.models if m in d)
        in_flight = sum(d[m].in_flight for d in answered_gateways for m in self.models if m in d)
        if answered_gateways:
            values[DEMAND] = queued + in_flight
        arrivals = self._arrivals(scrape, now)
        if arrivals is not None:
            values[ARRIVALS] = arrivals
        load = queued + in_flight + rate + (arrivals or 0.0)
        busy = load + values.get(WAITING, 0.0) + values.get(RUNNING, 0.0) > 0
        return FleetSample(
            ready=len(answered),
            values=values,
            queued=queued,
            in_flight=in_flight,
            missing=missing,
            busy=busy,
        )

    def _arrivals(self, scrape: Scrape, now: float) -> float | None:
        """Requests/s that arrived at the gateways since their previous scrape; None before any rate."""
        total, rated = 0.0, 0
        current: dict[str, _GatewayReading] = {}
        for g in scrape.gateways:
            if g.demand is None or g.finished is None:
                continue
            reading = _GatewayReading(
                now,
                sum(g.finished.get(m, 0.0) for m in self.models),
                sum(g.demand[m].total for m in self.models if m in g.demand),
            )
            current[g.url] = reading
            before = self._gateways.get(g.url)
            if before is None or now <= before.at:
                continue
            finished = reading.finished - before.finished
            arrived = (
                reading.finished + reading.demand
                if finished < 0
                else finished + reading.demand - before.demand
            )
            total += max(0.0, arrived) / (now - before.at)
            rated += 1
        failed = {g.url for g in scrape.gateways if g.demand is None or g.finished is None}
        self._gateways = {url: r for url, r in self._gateways.items() if url in failed} | current
        return total if rated else None
