"""Load as the router sees it, shared by the load-based plugins.

``load(e) = max(in_flight_e, running_e + waiting_e)``: the gateway's exact in-flight count is fresh but covers
only this replica; the engine's scraped queue gauges cover every replica but lag by up to one scrape interval.
Taking the larger never under-counts either source.
"""

from __future__ import annotations

from gateway.endpoints import Endpoint


def request_load(endpoint: Endpoint) -> float:
    m = endpoint.metrics
    scraped = (m.running + m.waiting) if m is not None else 0.0
    return max(float(endpoint.in_flight), scraped)
