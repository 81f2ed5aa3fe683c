"""``prefix-cache`` (approximate) and ``precise-prefix`` scorers: the longest cached prefix wins.

score_e = matched_blocks_e ÷ total_blocks, where matched_blocks_e is the number of *leading* full blocks of the
prompt the index says endpoint e holds, and total_blocks = ⌊prompt_tokens ÷ block_size⌋ (only full blocks are
cacheable). Prompts shorter than one block score 1.0 everywhere (no information).

* ``prefix-cache`` reads the approximate index, learned from this gateway's own routing decisions.
* ``precise-prefix`` reads the index fed by the engines' KV events (BlockStored / BlockRemoved), so it also
  sees evictions.

Alone, either collapses a shared system prompt onto one pod; the built-in profiles pair them with the
``imbalance`` filter, and the default profile uses ``ttft-cost`` instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.endpoints import Endpoint
from gateway.routing.types import RoutingRequest


class PrefixMatch:
    needs_matches: str | None

    def __init__(self, mode: str) -> None:
        self.needs_matches = mode
        self.name = "prefix-cache" if mode == "approximate" else "precise-prefix"

    def score(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> list[float]:
        total = len(request.hashes)
        if total == 0:
            return [1.0] * len(endpoints)
        return [min(1.0, request.matches.get(e.key, 0) / total) for e in endpoints]
