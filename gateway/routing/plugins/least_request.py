"""``least-request`` scorer: fewest requests in flight wins.

score_e = (max − load_e) ÷ (max − min) over the candidates, load as in :mod:`.load`; 1.0 for all when equal
(llm-d's queue scorer, applied to running + waiting). No parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.endpoints import Endpoint
from gateway.routing.plugins.load import request_load
from gateway.routing.types import RoutingRequest, min_max_inverse


class LeastRequest:
    name = "least-request"
    needs_matches = None

    def score(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> list[float]:
        return min_max_inverse([request_load(e) for e in endpoints])
