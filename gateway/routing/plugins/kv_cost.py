"""``kv-cost`` scorer (the default profile): prefix reuse and load in one cost, in KV blocks.

In the spirit of NVIDIA Dynamo's KV router::

    prefill_e = ⌈prompt_tokens ÷ B⌉ − matched_blocks_e          blocks this endpoint would have to compute
    load_e    = max(active_blocks_e, used_blocks_e + waiting_e × request_blocks)
    cost_e    = overlap_weight × prefill_e + load_e
    score_e   = (max cost − cost_e) ÷ (max cost − min cost)      (1.0 for all when equal)

* ``active_blocks_e``: the gateway's exact count of blocks held by its in-flight requests on e (prompt + expected
  output, rounded up to blocks), updated at request start and end.
* ``used_blocks_e`` = kv_cache_usage_perc × num_gpu_blocks (scraped; covers other gateway replicas); waiting
  requests are charged the size of this request.

Why it cannot pile a shared system prompt onto one pod: the warm pod saves at most ``overlap_weight ×
prompt_blocks`` of cost, while every request already running there adds at least its own blocks (≥ the prompt)
to its load. So once roughly ``overlap_weight`` requests are in flight on the warm pod, a cold pod becomes
cheaper, receives the prompt, and is warm from then on.

Parameters: ``overlap_weight`` (default 1.0; 0 = pure load balancing, larger favours cache reuse).
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.endpoints import Endpoint
from gateway.routing.types import RoutingRequest, min_max_inverse


class KVCost:
    name = "kv-cost"

    def __init__(self, mode: str = "approximate", overlap_weight: float = 1.0) -> None:
        if overlap_weight < 0:
            raise ValueError("overlap_weight must be >= 0")
        self.needs_matches: str | None = mode
        self.overlap_weight = overlap_weight

    def costs(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> list[float]:
        prompt_blocks = -(-request.prompt_tokens // request.block_size)
        out = []
        for e in endpoints:
            prefill = prompt_blocks - request.matches.get(e.key, 0)
            scraped = 0.0
            m = e.metrics
            if m is not None:
                if m.num_gpu_blocks:
                    scraped = m.kv_usage * m.num_gpu_blocks
                scraped += m.waiting * request.blocks
            out.append(self.overlap_weight * prefill + max(float(e.active_blocks), scraped))
        return out

    def score(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> list[float]:
        return min_max_inverse(self.costs(request, endpoints))
