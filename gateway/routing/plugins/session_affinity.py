"""``session-affinity`` scorer: requests with the same ``x-session-id`` go to the same endpoint.

Rendezvous (highest-random-weight) hashing: w_e = xxh3_64(session_id ‖ endpoint_key); the endpoint with the
largest w_e scores 1.0, every other 0.0. When an endpoint leaves, only its sessions move (to their second
choice); when one joins, it takes about 1/n of the sessions. Requests without a session id score 1.0
everywhere, so the profile's other scorers decide. No parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import xxhash

from gateway.endpoints import Endpoint
from gateway.routing.types import RoutingRequest


def rendezvous_weight(session_id: str, key: str) -> int:
    return xxhash.xxh3_64_intdigest(f"{session_id}\x00{key}".encode())


class SessionAffinity:
    name = "session-affinity"
    needs_matches = None

    def score(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> list[float]:
        if not request.session_id or not endpoints:
            return [1.0] * len(endpoints)
        weights = [rendezvous_weight(request.session_id, e.key) for e in endpoints]
        best = max(weights)
        return [1.0 if w == best else 0.0 for w in weights]
