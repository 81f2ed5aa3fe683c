"""The live view of engine endpoints: what each serves, its load as the gateway counts it, its health.

Two load signals feed routing, on purpose:

* the gateway's **own exact counters** (``in_flight``, ``active_blocks``, ``prefilling``, ``pending_blocks``)
  change at request start, first byte and end, so back-to-back decisions see each other (a scraped gauge is up to one scrape interval stale, which is how a
  burst piles onto one pod);
* the **scraped engine metrics** (queue, KV usage, LoRA slots) include traffic of other gateway replicas.

Endpoints are keyed by ``host:port`` — the same string the prefix index uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from flotilla.vllm_metrics import EngineMetrics


def endpoint_key(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """What discovery knows about an endpoint (static list, YAML file or a ready pod)."""

    url: str
    #: served base model name, if discovery knows it (a pod label); otherwise learned from /v1/models
    model: str | None = None
    #: ZMQ URL of the engine's KV-event publisher (precise prefix mode)
    kv_events: str | None = None
    #: routing profile the model's owner asked for (ModelDeployment ``spec.routingProfile``, a pod annotation)
    routing_profile: str | None = None
    #: GPU type of the pod (label ``flotilla.dev/gpu-type``): a ModelGroup's plan routes request sizes by it
    gpu_type: str | None = None

    @property
    def key(self) -> str:
        return endpoint_key(self.url)


class CircuitBreaker:
    """Closed → open after ``threshold`` consecutive failures → half-open after ``cooldown`` s (one trial
    request; success closes, failure re-opens). Keeps a flapping pod from eating every request's first try.

    The trial is owned by the :class:`Lease` that started it: a trial that ends with neither success nor
    failure (the client went away before the first byte) is *abandoned*, so the next request may try. Without
    that, one impatient client left the breaker half-open with a trial "in flight" forever: a healthy engine
    refused every request.
    """

    __slots__ = ("clock", "cooldown", "failures", "opened_at", "threshold", "trial_in_flight")

    def __init__(self, threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.trial_in_flight = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self.opened_at >= self.cooldown else "open"

    def allows(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        return state == "half-open" and not self.trial_in_flight

    def on_attempt(self) -> bool:
        """A try starts; True if it is the half-open trial (its lease must end it)."""
        if self.opened_at is not None:
            self.trial_in_flight = True
            return True
        return False

    def on_success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.trial_in_flight = False

    def on_failure(self) -> None:
        self.failures += 1
        self.trial_in_flight = False
        if self.opened_at is not None or self.failures >= self.threshold:
            self.opened_at = self.clock()

    def on_abandon(self) -> None:
        """The trial ended without a verdict: stay half-open, let the next request try."""
        self.trial_in_flight = False


@dataclass(slots=True, eq=False)
class Endpoint:
    spec: EndpointSpec
    breaker: CircuitBreaker
    key: str = ""
    url: str = ""
    #: model ids served (base and adapters) and the adapter subset, from /v1/models
    models: frozenset[str] = frozenset()
    adapters: frozenset[str] = frozenset()
    cards: list[dict[str, Any]] = field(default_factory=list)
    models_known: bool = False
    metrics: EngineMetrics | None = None
    metrics_at: float = 0.0
    scrape_failures: int = 0
    healthy: bool = False
    # exact gateway-side load
    in_flight: int = 0
    active_blocks: int = 0
    #: in-flight requests that have not sent a byte back yet, and their uncached prompt blocks (queued prefill)
    prefilling: int = 0
    pending_blocks: int = 0
    served: int = 0
    failed: int = 0

    def __post_init__(self) -> None:
        self.key = self.spec.key
        self.url = self.spec.url.rstrip("/")
        if self.spec.model and not self.models:
            self.models = frozenset({self.spec.model})

    def serves(self, model: str) -> bool:
        return model in self.models

    @property
    def available(self) -> bool:
        return self.healthy and self.breaker.allows()


class Lease:
    """One try's claim on an endpoint: the only code that changes its load counters and ends a breaker trial.

    Created when a try starts (``in_flight``, ``active_blocks``, the queued prefill ``pending_blocks`` and
    ``prefilling`` go up), told about the first byte (queued prefill released) and the verdict (success or
    failure, for the breaker), and released exactly once in effect — callers release in ``finally`` on every
    exit path and may call :meth:`release` again harmlessly. Load counters that never came back down skewed
    every later routing decision when an unexpected exception skipped a hand-written release.
    """

    __slots__ = ("blocks", "endpoint", "prefill", "prefilling", "released", "trial", "verdict")

    def __init__(self, endpoint: Endpoint, *, blocks: int, prefill: int) -> None:
        self.endpoint = endpoint
        self.blocks = blocks
        self.prefill = prefill
        endpoint.in_flight += 1
        endpoint.active_blocks += blocks
        endpoint.pending_blocks += prefill
        endpoint.prefilling += 1
        self.prefilling = True
        self.released = False
        self.verdict = False
        self.trial = endpoint.breaker.on_attempt()

    def first_byte(self) -> None:
        """The engine answered: this try's prefill is no longer queued there. Idempotent."""
        if self.prefilling:
            self.prefilling = False
            self.endpoint.prefilling -= 1
            self.endpoint.pending_blocks -= self.prefill

    def succeeded(self) -> None:
        self.verdict = True
        self.endpoint.breaker.on_success()

    def failed(self) -> None:
        self.verdict = True
        self.endpoint.breaker.on_failure()
        self.endpoint.failed += 1

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.first_byte()
        self.endpoint.in_flight -= 1
        self.endpoint.active_blocks -= self.blocks
        if self.trial and not self.verdict:
            self.endpoint.breaker.on_abandon()


class EndpointPool:
    """All known endpoints. Discovery adds/removes; the scraper updates; routing reads."""

    def __init__(
        self,
        *,
        breaker_failures: int = 3,
        breaker_cooldown: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._by_key: dict[str, Endpoint] = {}
        self._breaker = (breaker_failures, breaker_cooldown, clock)
        #: incremented on every membership change (round-robin and caches key on it)
        self.generation = 0

    def __iter__(self) -> Any:
        return iter(list(self._by_key.values()))

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, key: str) -> Endpoint | None:
        return self._by_key.get(key)

    def upsert(self, spec: EndpointSpec) -> Endpoint:
        current = self._by_key.get(spec.key)
        if current is not None and current.spec == spec:
            return current
        endpoint = Endpoint(spec=spec, breaker=CircuitBreaker(*self._breaker))
        if current is not None:  # keep live counters across a spec change (e.g. a label edit)
            endpoint.in_flight, endpoint.active_blocks = current.in_flight, current.active_blocks
            endpoint.prefilling, endpoint.pending_blocks = current.prefilling, current.pending_blocks
            endpoint.healthy, endpoint.metrics = current.healthy, current.metrics
        self._by_key[spec.key] = endpoint
        self.generation += 1
        return endpoint

    def remove(self, key: str) -> Endpoint | None:
        removed = self._by_key.pop(key, None)
        if removed is not None:
            self.generation += 1
        return removed

    def replace_all(self, specs: Iterable[EndpointSpec]) -> list[str]:
        """Make the pool exactly ``specs``; return the keys removed."""
        wanted = {s.key: s for s in specs}
        removed = [k for k in self._by_key if k not in wanted]
        for key in removed:
            self.remove(key)
        for spec in wanted.values():
            self.upsert(spec)
        return removed

    def known_models(self) -> set[str]:
        out: set[str] = set()
        for endpoint in self._by_key.values():
            out |= endpoint.models
        return out

    def hosting(self, model: str) -> list[Endpoint]:
        return [e for e in self._by_key.values() if e.serves(model)]
