"""``imbalance`` filter: when load is badly skewed, only the least-loaded endpoints stay candidates.

SGLang's cache-aware router rule (AIBrix uses the absolute part)::

    imbalanced ⇔ max_load − min_load > abs_threshold  and  max_load > rel_threshold × min_load
    imbalanced → keep { e : load_e = min_load }, else keep all

load as in :mod:`.load`. Parameters: ``abs_threshold`` (default 8 requests; SGLang 64 for big batches),
``rel_threshold`` (default 1.5). Guards prefix-only scorers against the shared-system-prompt hotspot.
"""

from __future__ import annotations

from gateway.endpoints import Endpoint
from gateway.routing.plugins.load import request_load
from gateway.routing.types import RoutingRequest


class Imbalance:
    name = "imbalance"

    def __init__(self, abs_threshold: float = 8.0, rel_threshold: float = 1.5) -> None:
        self.abs_threshold = abs_threshold
        self.rel_threshold = rel_threshold

    def filter(self, request: RoutingRequest, endpoints: list[Endpoint]) -> list[Endpoint]:
        if len(endpoints) < 2:
            return endpoints
        loads = [request_load(e) for e in endpoints]
        lo, hi = min(loads), max(loads)
        if hi - lo > self.abs_threshold and hi > self.rel_threshold * lo:
            return [e for e, load in zip(endpoints, loads, strict=True) if load == lo]
        return endpoints
