"""Holding requests for a model that has no ready endpoint yet, instead of failing them at once.

Three situations make a request arrive before anything can serve it, and in each a 404 or 503 that a second
later would have been a 200 is the wrong answer: a model at zero replicas that the autoscaler is bringing up
(Knative's activator exists for this), a LoRA adapter being loaded or re-placed, and a gateway that started
before it could reach its engines. The request waits here, bounded three ways — total requests held, total
body bytes held (a held body is memory), and time (``timeout``) — and is dispatched as soon as an endpoint can
take it. Past any bound it gets the 503 with ``Retry-After`` that it would have got anyway.

Waiting is event-driven with a poll floor: the gateway calls :meth:`Holding.wake` when its endpoint set or a
scrape changes something, and every waiter re-probes at least every ``poll`` seconds (a circuit breaker turning
half-open is a state change that raises no event). While a model has waiters, one of them at a time asks the
gateway to ``refresh`` that model's endpoints (re-read ``/v1/models`` and health) at most every ``poll``
seconds, so an adapter loaded a moment ago is found within about ``poll``, not a full models interval.

The probe decides: it returns the endpoints to route to, None to keep waiting, or raises the error the
request should get now (an unknown model is still a 404 at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from gateway.errors import NoEndpoint

T = TypeVar("T")


class Holding(Generic[T]):
    def __init__(
        self,
        *,
        timeout: float,
        max_queued: int,
        max_bytes: int,
        retry_after: int,
        refresh: Callable[[str], Awaitable[None]],
        poll: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout = timeout
        self.max_queued = max_queued
        self.max_bytes = max_bytes
        self.retry_after = retry_after
        self.poll = poll
        self._refresh = refresh
        self._clock = clock
        #: requests held per model (exported as flotilla_gateway_model_queued_requests)
        self.queued: dict[str, int] = {}
        self.total = 0
        self.bytes = 0
        self._changed = asyncio.Event()
        self._refreshing: set[str] = set()
        self._refreshed_at: dict[str, float] = {}

    def wake(self) -> None:
        """Something changed (endpoints, health, served models): every waiter probes again now."""
        self._changed.set()
        self._changed = asyncio.Event()

    def _refused(self, model: str, why: str) -> NoEndpoint:
        return NoEndpoint(
            f"no endpoint can serve model '{model}' yet ({why}); retry later",
            headers={"retry-after": str(self.retry_after)},
        )

    async def wait(self, model: str, size: int, probe: Callable[[], T | None]) -> T:
        """Hold until ``probe`` returns something (or raises), at most ``timeout`` seconds."""
        found = probe()
        if found is not None:
            return found
        if self.total >= self.max_queued or self.bytes + size > self.max_bytes:
            raise self._refused(model, "the gateway's holding queue is full")
        self.total += 1
        self.bytes += size
        self.queued[model] = self.queued.get(model, 0) + 1
        try:
            deadline = self._clock() + self.timeout
            while True:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise self._refused(model, f"none became ready within {self.timeout:g} s")
                changed = self._changed
                await self._maybe_refresh(model, remaining)
                found = probe()
                if found is not None:
                    return found
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), min(self.poll, remaining))
                found = probe()
                if found is not None:
                    return found
        finally:
            self.total -= 1
            self.bytes -= size
            left = self.queued[model] - 1
            if left:
                self.queued[model] = left
            else:
                del self.queued[model]
                self._refreshed_at.pop(model, None)

    async def _maybe_refresh(self, model: str, remaining: float) -> None:
        now = self._clock()
        if model in self._refreshing or now - self._refreshed_at.get(model, -1e9) < self.poll:
            return
        self._refreshing.add(model)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._refresh(model)
        finally:
            self._refreshing.discard(model)
            self._refreshed_at[model] = self._clock()
        self.wake()
