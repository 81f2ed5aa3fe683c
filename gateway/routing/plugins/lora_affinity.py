"""``lora-affinity`` scorer: prefer endpoints where the requested adapter is already in the running batch.

From the scraped ``vllm:lora_requests_info`` (llm-d's lora-affinity scorer)::

    1.0  adapter is running on e
    0.8  e has a free adapter slot (|running adapters| < max_lora)
    0.6  adapter is waiting on e
    0.0  otherwise (e would have to swap an adapter out)

Base-model requests, and endpoints without LoRA metrics, score 1.0 (no preference). Which endpoints *can*
serve an adapter at all is decided before scoring (only those listing it in /v1/models are candidates).
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.endpoints import Endpoint
from gateway.routing.types import RoutingRequest


class LoraAffinity:
    name = "lora-affinity"
    needs_matches = None

    def score(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> list[float]:
        if not request.is_adapter:
            return [1.0] * len(endpoints)
        out = []
        for e in endpoints:
            info = e.metrics.lora if e.metrics else None
            if info is None or request.model in info.running:
                out.append(1.0)
            elif len(info.running) < info.max_lora:
                out.append(0.8)
            elif request.model in info.waiting:
                out.append(0.6)
            else:
                out.append(0.0)
        return out
