"""Pickers: turn scores into the order in which endpoints are tried.

* ``max-score``: highest Σ weight × score first; ties broken at random (shuffle, then a stable sort), so
  equal endpoints share load instead of the first one taking everything.
* ``random``: uniform random order; scores ignored.
* ``round-robin``: a counter per model walks the endpoints sorted by key; scores ignored.
* ``power-of-two``: two endpoints drawn at random, the less loaded first (load as in :mod:`.load`), then
  the rest by load — near least-request balance from two samples, without herding on a stale minimum.
"""

from __future__ import annotations

import itertools
import random

from gateway.endpoints import Endpoint
from gateway.routing.plugins.load import request_load
from gateway.routing.types import RoutingRequest


class MaxScore:
    name = "max-score"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def rank(self, request: RoutingRequest, endpoints: list[Endpoint], scores: list[float]) -> list[Endpoint]:
        pairs = list(zip(endpoints, scores, strict=True))
        self._rng.shuffle(pairs)
        pairs.sort(key=lambda p: p[1], reverse=True)
        return [e for e, _ in pairs]


class RandomPicker:
    name = "random"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def rank(self, request: RoutingRequest, endpoints: list[Endpoint], scores: list[float]) -> list[Endpoint]:
        out = list(endpoints)
        self._rng.shuffle(out)
        return out


class RoundRobin:
    name = "round-robin"

    def __init__(self) -> None:
        self._counters: dict[str, itertools.count[int]] = {}

    def rank(self, request: RoutingRequest, endpoints: list[Endpoint], scores: list[float]) -> list[Endpoint]:
        if not endpoints:
            return []
        ordered = sorted(endpoints, key=lambda e: e.key)
        start = next(self._counters.setdefault(request.model, itertools.count())) % len(ordered)
        return ordered[start:] + ordered[:start]


class PowerOfTwo:
    name = "power-of-two"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def rank(self, request: RoutingRequest, endpoints: list[Endpoint], scores: list[float]) -> list[Endpoint]:
        sample = list(endpoints) if len(endpoints) <= 2 else self._rng.sample(endpoints, 2)
        sample.sort(key=request_load)
        rest = sorted((e for e in endpoints if e not in sample), key=request_load)
        return sample + rest
