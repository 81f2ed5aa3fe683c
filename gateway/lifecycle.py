"""A proxied request's life, and the hooks that act when it is routed and when it ends.

The gateway's request path is a pipeline of named steps (``Gateway.handle``: admit → hold/candidates → route
→ dispatch); everything that must happen *because* a request was routed, and be undone or accounted when it
ends, is a :class:`RequestHook` — the shape of the Gateway API Inference Extension's PreRequest and
ResponseComplete plugins:

- ``on_routed`` runs after the routing decision and before the first byte goes upstream (the approximate
  prefix index learns the decision here, so a burst of identical prompts sees it);
- ``on_finished`` runs exactly once per routed request, on every exit path — served, failed, refused by every
  endpoint, the client gone, or a bug — because :meth:`RequestContext.finish` is idempotent and the pipeline
  calls it from the proxy's completion callback *and* from ``except BaseException``.

Hooks replace state changes that used to hide in a closure passed down the proxy: each one owns one concern
(per-model demand, the prefix index, TPM reconciliation, metrics and the access log) and can be tested alone.
A hook that raises in ``on_finished`` is logged and the others still run: accounting must not be skipped
because logging failed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.attempt import Attempt
from gateway.auth import ApiKey
from gateway.parsing import ParsedRequest
from gateway.ratelimit import Limiter
from gateway.routing import RoutingRequest
from gateway.routing.router import Decision
from gateway.telemetry import GatewayMetrics
from kvcache import PrefixIndex

log = logging.getLogger("flotilla.gateway")


@dataclass(slots=True)
class RequestContext:
    """Everything the pipeline learned about one request, handed to every hook."""

    path: str
    request_id: str
    parsed: ParsedRequest
    key: ApiKey | None
    started: float = field(default_factory=time.perf_counter)
    #: rate-limit identity and what admission charged against the key's TPM (reconciled from usage)
    key_id: str = "anonymous"
    charged_tokens: int = 0
    tpm: int | None = None
    limit_headers: dict[str, str] = field(default_factory=dict)
    hashes: Sequence[int] = ()
    routing: RoutingRequest | None = None
    decision: Decision | None = None
    attempt: Attempt | None = None
    #: hooks that ran ``on_routed`` (only those get ``on_finished``)
    routed_by: list[RequestHook] = field(default_factory=list)
    finished: bool = False

    @property
    def model(self) -> str:
        return self.parsed.model

    def finish(self) -> None:
        """End the request for every hook that saw it routed; safe to call again (it does nothing then)."""
        if self.finished:
            return
        self.finished = True
        for hook in self.routed_by:
            try:
                hook.on_finished(self)
            except Exception:  # one hook's bug must not skip the others' accounting
                log.exception("request hook %s failed", type(hook).__name__)


class RequestHook(Protocol):
    async def on_routed(self, ctx: RequestContext) -> None: ...

    def on_finished(self, ctx: RequestContext) -> None: ...


class DemandHook:
    """Per-model requests dispatched and not finished: the in-flight half of the autoscaler's demand signal."""

    def __init__(self, in_flight: dict[str, int]) -> None:
        self.in_flight = in_flight

    async def on_routed(self, ctx: RequestContext) -> None:
        self.in_flight[ctx.model] = self.in_flight.get(ctx.model, 0) + 1

    def on_finished(self, ctx: RequestContext) -> None:
        left = self.in_flight.get(ctx.model, 0) - 1
        if left > 0:
            self.in_flight[ctx.model] = left
        else:
            self.in_flight.pop(ctx.model, None)


class IndexHook:
    """Approximate prefix mode: the chosen endpoint will hold the prompt's blocks; a retry elsewhere too."""

    def __init__(self, index: PrefixIndex, spawn: Callable[[Awaitable[Any]], None]) -> None:
        self.index = index
        self.spawn = spawn

    async def on_routed(self, ctx: RequestContext) -> None:
        if ctx.hashes and ctx.decision is not None:
            await self.index.record(ctx.decision.ranked[0].key, ctx.hashes)

    def on_finished(self, ctx: RequestContext) -> None:
        a, decision = ctx.attempt, ctx.decision
        if not ctx.hashes or a is None or a.endpoint is None or decision is None or a.status >= 400:
            return
        if a.endpoint is not decision.ranked[0]:  # a retry served it elsewhere: that engine holds it now
            self.spawn(self.index.record(a.endpoint.key, ctx.hashes))


class UsageHook:
    """TPM is charged at admission on an estimate (prompt + max_tokens); the engine's ``usage`` corrects it."""

    def __init__(self, limiter: Limiter, spawn: Callable[[Awaitable[Any]], None]) -> None:
        self.limiter = limiter
        self.spawn = spawn

    async def on_routed(self, ctx: RequestContext) -> None:
        if ctx.tpm and ctx.attempt is not None:
            ctx.attempt.want_usage = True

    def on_finished(self, ctx: RequestContext) -> None:
        if not ctx.tpm or ctx.attempt is None:
            return
        used = ctx.attempt.usage_tokens
        if used is None:
            if ctx.attempt.status < 400:
                return  # a stream without a usage chunk: the estimate stands
            used = 0  # refused or failed upstream: nothing was generated, give the quota back
        delta = used - ctx.charged_tokens
        if delta:
            self.spawn(self.limiter.adjust(ctx.key_id, delta))


class TelemetryHook:
    """Per-request metrics and the one access-log line per proxied request."""

    def __init__(self, metrics: GatewayMetrics, counters: Callable[[int], None]) -> None:
        self.metrics = metrics
        self.counters = counters

    async def on_routed(self, ctx: RequestContext) -> None:
        return None

    def on_finished(self, ctx: RequestContext) -> None:
        a = ctx.attempt
        status = a.status if a is not None and a.status else 500
        self.counters(status)
        endpoint = a.endpoint.key if a is not None and a.endpoint is not None else "none"
        self.metrics.requests_of(ctx.model, endpoint, str(status)).inc()
        elapsed = time.perf_counter() - ctx.started
        self.metrics.e2e_of(ctx.model).observe(elapsed)
        if not log.isEnabledFor(logging.INFO):  # the line's fields are built only for a log that keeps them
            return
        log.info(
            "%s %s -> %s %s",
            ctx.path,
            ctx.model,
            endpoint,
            status,
            extra={
                "fields": {
                    "request_id": ctx.request_id,
                    "model": ctx.model,
                    "endpoint": endpoint,
                    "status": status,
                    "tries": a.tries if a is not None else 0,
                    "strategy": ctx.decision.profile if ctx.decision is not None else None,
                    "stream": ctx.parsed.stream,
                    "prompt_tokens": ctx.parsed.prompt_tokens,
                    "key": ctx.key.name if ctx.key else None,
                    "duration_ms": round(elapsed * 1000, 2),
                }
            },
        )
