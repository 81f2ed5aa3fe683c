"""One request's way through the engines: which endpoint it is on, how its tries went, what it used.

The proxy (gateway/proxy.py) fills it in try by try, the relay (gateway/relay.py) as a stream ends, and the
request hooks (gateway/lifecycle.py) read it when the request is done.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.endpoints import Endpoint, Lease


@dataclass(slots=True)
class Attempt:
    """Bookkeeping for one request as it moves through endpoints."""

    model: str
    blocks: int
    request_id: str
    tries: int = 0
    endpoint: Endpoint | None = None
    status: int = 0
    #: (endpoint key, what went wrong) per failed try: logged in full, shown to clients without the keys
    errors: list[tuple[str, str]] = field(default_factory=list)
    #: why the last try failed: connect | timeout | status_5xx | read
    reason: str = ""
    #: prompt blocks and the routing-time prefix matches (endpoint key -> leading blocks held), for the
    #: endpoint's queued-prefill count
    prompt_blocks: int = 0
    matches: dict[str, int] = field(default_factory=dict)
    #: the current try's claim on ``endpoint`` (load counters, breaker trial); released on every exit path
    lease: Lease | None = None
    #: read the engine's ``usage`` (TPM reconciliation) into ``usage_tokens``; costs a parse, so only on demand
    want_usage: bool = False
    usage_tokens: int | None = None
