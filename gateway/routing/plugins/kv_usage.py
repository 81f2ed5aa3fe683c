"""``kv-usage`` scorer: the endpoint with the most free KV cache wins.

score_e = 1 − kv_cache_usage_perc_e (scraped; 0–1). An endpoint not scraped yet scores 1. No parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.endpoints import Endpoint
from gateway.routing.types import RoutingRequest


class KVUsage:
    name = "kv-usage"
    needs_matches = None

    def score(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> list[float]:
        return [1.0 - min(1.0, max(0.0, e.metrics.kv_usage)) if e.metrics else 1.0 for e in endpoints]
