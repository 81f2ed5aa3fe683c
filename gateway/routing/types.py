"""The routing contract: filter → weighted scorers → picker, over one :class:`RoutingRequest`.

Per-request data that several plugins need (token count, prefix block hashes, prefix matches) is computed once
by the router before the plugins run; plugins are pure, synchronous functions of that data and the endpoints'
live state, so they are tested with plain tables.

Scores are in [0, 1], higher is better. A scorer that cannot tell endpoints apart returns the same score for
all of them (1.0 by convention), so it never biases the pick.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.endpoints import Endpoint


@dataclass(slots=True)
class RoutingRequest:
    model: str
    #: prompt length in tokens and the chained hashes of its full blocks (scoped to ``model``)
    prompt_tokens: int = 0
    hashes: list[int] = field(default_factory=list)
    block_size: int = 16
    #: expected output tokens (max_tokens, or a default) for load accounting
    max_tokens: int = 0
    session_id: str | None = None
    #: True when ``model`` is a LoRA adapter (engines list it with a parent model)
    is_adapter: bool = False
    #: endpoint key -> leading blocks of ``hashes`` it holds; filled once when a plugin needs it
    matches: dict[str, int] = field(default_factory=dict)

    @property
    def blocks(self) -> int:
        """Blocks the request occupies while it runs: prompt plus expected output, rounded up."""
        return -(-(self.prompt_tokens + self.max_tokens) // self.block_size)


class Filter(Protocol):
    name: str

    def filter(self, request: RoutingRequest, endpoints: list[Endpoint]) -> list[Endpoint]:
        """A subset of ``endpoints``; returning none means the filter cannot help, and is ignored."""
        ...


class Scorer(Protocol):
    name: str
    #: "approximate" / "precise" if the scorer reads ``request.matches`` from that index, else None
    needs_matches: str | None

    def score(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> list[float]:
        """One score in [0, 1] per endpoint, in order."""
        ...


class Picker(Protocol):
    name: str

    def rank(self, request: RoutingRequest, endpoints: list[Endpoint], scores: list[float]) -> list[Endpoint]:
        """All endpoints, best first (the proxy tries them in this order on failure)."""
        ...


def min_max_inverse(values: Sequence[float]) -> list[float]:
    """(max − x) ÷ (max − min): 1 for the smallest value, 0 for the largest; all 1.0 if they are equal."""
    if not values:
        return []
    lo, hi = min(values), max(values)
    if hi - lo <= 1e-12:
        return [1.0] * len(values)
    span = hi - lo
    return [(hi - v) / span for v in values]


def shuffled(endpoints: list[Endpoint], rng: random.Random) -> list[Endpoint]:
    out = list(endpoints)
    rng.shuffle(out)
    return out
