"""Forwarding one request upstream: tries in routing order, retries before the first byte, relays SSE.

* **Retry** on connect errors, timeouts and 5xx *before any byte reached the client*, on the next endpoint in
  routing order, at most ``max_retries`` times, and only while the :class:`RetryBudget` allows (retries may add
  at most ``ratio`` of the request rate plus ``min_per_second``), so a sick fleet is not hit by a retry storm.
  The retry metric's reason (connect | timeout | status_5xx | read) is the upstream client's classification
  (gateway/upstream.py).
* **Non-streaming** responses are read whole before anything is sent, so a failure while reading is retried too.
* **Streaming** responses are relayed chunk by chunk without buffering (gateway/relay.py). Once the first byte
  is out, a failure (connection reset, idle timeout) ends the stream with vLLM's in-stream error event and
  ``data: [DONE]``: never a hang, never a silent truncation. A client that goes away closes the upstream
  response, and the engine aborts the request.
* Timeouts: connect (the upstream client's); for streams, a socket-read timeout of ``stream_idle_timeout`` (headers and each chunk);
  for non-streaming requests ``first_byte_timeout`` for the whole response.
* Every try holds a :class:`Lease` on its endpoint, released on every exit path, and ``on_done`` runs exactly
  once per request. Responses go out as raw ASGI messages (gateway/replies.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from gateway.attempt import Attempt
from gateway.endpoints import Endpoint, Lease
from gateway.errors import GatewayError, NoEndpoint, UpstreamError
from gateway.relay import Relay, response_headers, usage_from_json, usage_from_sse
from gateway.replies import Reply, Sendable
from gateway.telemetry import GatewayMetrics
from gateway.upstream import Upstream

__all__ = ["Proxy", "Refill", "RetryBudget", "usage_from_json", "usage_from_sse"]

log = logging.getLogger("flotilla.gateway")


class RetryBudget:
    """Token bucket: each request deposits ``ratio`` tokens, time deposits ``min_per_second``; a retry costs 1."""

    def __init__(self, ratio: float, min_per_second: float, cap: float = 100.0) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.cap = cap
        self._tokens = cap
        self._at = time.monotonic()

    def deposit(self) -> None:
        self._tokens = min(self.cap, self._tokens + self.ratio)

    def withdraw(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.cap, self._tokens + (now - self._at) * self.min_per_second)
        self._at = now
        if self._tokens >= 1.0 - 1e-9:
            self._tokens -= 1.0
            return True
        return False


#: given the keys of endpoints already tried, endpoints to try next (may wait for them; raises when none come)
Refill = Callable[[set[str]], Awaitable[list[Endpoint]]]


class Proxy:
    def __init__(
        self,
        upstream: Upstream,
        metrics: GatewayMetrics,
        *,
        max_retries: int,
        budget: RetryBudget,
        first_byte_timeout: float,
        stream_idle_timeout: float,
        retry_after: int,
        debug_headers: bool = False,
    ) -> None:
        self.upstream = upstream
        self.debug_headers = debug_headers
        self.metrics = metrics
        self.max_retries = max_retries
        self.budget = budget
        self.retry_after = retry_after
        self.first_byte_timeout = first_byte_timeout
        #: per-read timeouts: a stream's idle limit; a whole response's deadline (each read is bounded by it too)
        self._read_timeout = {True: stream_idle_timeout, False: first_byte_timeout}

    def _failed(self, lease: Lease, attempt: Attempt, reason: str, detail: str) -> None:
        lease.release()
        lease.failed()
        attempt.reason = reason
        attempt.errors.append((lease.endpoint.key, detail))

    async def forward(
        self,
        ranked: list[Endpoint],
        path: str,
        body: bytes,
        headers: dict[str, str],
        *,
        stream: bool,
        attempt: Attempt,
        on_done: Callable[[Attempt], None],
        refill: Refill | None = None,
    ) -> Sendable:
        """Try ``ranked`` in order. When every try failed *to connect* (or every breaker was open) and
        ``refill`` is given, ask it for endpoints not tried yet — it may hold the request while, say, an adapter
        is re-placed after its only pod died — and go on with those; nothing reached the client yet."""
        started = time.perf_counter()
        if attempt.tries == 0:
            self.budget.deposit()
        while True:
            response = await self._round(ranked, path, body, headers, stream, attempt, started, on_done)
            if response is not None:
                return response
            if refill is None or not (attempt.tries == 0 or attempt.reason in ("connect", "breaker")):
                break
            try:
                ranked = await refill({key for key, _ in attempt.errors})
            except BaseException as exc:  # held too long, or the client left while held: it ends here
                attempt.status = 499 if isinstance(exc, asyncio.CancelledError) else 503
                on_done(attempt)
                raise
            refill = None  # one more round: the refill already waited as long as a request may be held
        raise self._give_up(attempt, on_done)

    async def _round(
        self,
        ranked: list[Endpoint],
        path: str,
        body: bytes,
        headers: dict[str, str],
        stream: bool,
        attempt: Attempt,
        started: float,
        on_done: Callable[[Attempt], None],
    ) -> Sendable | None:
        """One pass over ``ranked`` (at most ``1 + max_retries`` tries); None = nothing succeeded."""
        first = attempt.tries
        for endpoint in ranked:
            if attempt.tries - first > self.max_retries:
                break
            if not endpoint.breaker.allows():
                continue
            if attempt.tries > first:
                if not self.budget.withdraw():
                    self.metrics.retries.labels("budget_exhausted").inc()
                    break
                self.metrics.retries.labels(attempt.reason).inc()
            attempt.tries += 1
            attempt.endpoint = endpoint
            lease = attempt.lease = Lease(
                endpoint,
                blocks=attempt.blocks,
                prefill=max(0, attempt.prompt_blocks - attempt.matches.get(endpoint.key, 0)),
            )
            try:
                response = await self._try(lease, path, body, headers, stream, attempt, started, on_done)
            except BaseException as exc:
                # the client went away before the first byte (CancelledError), or a bug: the try is over
                lease.release()
                attempt.status = 499 if isinstance(exc, asyncio.CancelledError) else 500
                on_done(attempt)
                raise
            if response is not None:
                return response
        return None

    def _give_up(self, attempt: Attempt, on_done: Callable[[Attempt], None]) -> GatewayError:
        """Account the failed request and return the error the client gets."""
        if attempt.tries == 0:
            self.metrics.rejections.labels("no_endpoint").inc()
            attempt.status = 503
            on_done(attempt)
            return NoEndpoint(
                f"no healthy endpoint can serve model '{attempt.model}' right now",
                headers={"retry-after": str(self.retry_after)},
            )
        # engine addresses go to the log, not to the client
        log.warning(
            "request %s (%s) failed after %d tries: %s",
            attempt.request_id,
            attempt.model,
            attempt.tries,
            "; ".join(f"{key}: {detail}" for key, detail in attempt.errors),
        )
        details = ", ".join(detail for _, detail in attempt.errors[-3:])
        if attempt.reason in ("connect", "breaker"):
            attempt.status = 503
            on_done(attempt)
            return NoEndpoint(
                f"no endpoint reachable for model '{attempt.model}' ({attempt.tries} tries: {details})",
                headers={"retry-after": str(self.retry_after)},
            )
        attempt.status = 502
        on_done(attempt)
        return UpstreamError(
            f"upstream failed after {attempt.tries} attempt(s): {details}",
            headers={"retry-after": str(self.retry_after)},
        )

    async def _try(
        self,
        lease: Lease,
        path: str,
        body: bytes,
        headers: dict[str, str],
        stream: bool,
        attempt: Attempt,
        started: float,
        on_done: Callable[[Attempt], None],
    ) -> Sendable | None:
        """One try under ``lease``. None = failed before the first byte (released, verdict given)."""
        endpoint = lease.endpoint
        try:
            # non-streaming: first_byte_timeout bounds the whole response, not each read (an engine dripping a
            # byte at a time would otherwise hold the request for ever); streams: the per-read idle timeout
            upstream = await self.upstream.post(
                endpoint.url + path,
                body,
                headers,
                read_timeout=self._read_timeout[stream],
                total=None if stream else self.first_byte_timeout,
            )
        except Exception as exc:  # the boundary: any transport failure is this try's failure
            self._failed(lease, attempt, self.upstream.reason(exc), f"{type(exc).__name__}")
            return None
        status = upstream.status
        if status >= 500:
            await upstream.close(complete=False)
            self._failed(lease, attempt, "status_5xx", f"HTTP {status}")
            return None
        lease.succeeded()
        attempt.status = status
        if stream and status == 200:
            return Relay(
                upstream,
                lease,
                attempt,
                metrics=self.metrics,
                started=started,
                headers=response_headers(upstream.raw_headers, attempt, self.debug_headers),
                on_done=on_done,
            )
        complete = False
        try:
            content = await upstream.read()  # within the same total deadline
            complete = True
        except Exception as exc:
            self._failed(lease, attempt, self.upstream.reason(exc), f"{type(exc).__name__}")
            return None
        finally:
            await upstream.close(complete=complete)
        lease.release()
        endpoint.served += 1
        self.metrics.ttft.labels(attempt.model).observe(time.perf_counter() - started)
        if attempt.want_usage and status == 200:
            attempt.usage_tokens = usage_from_json(content)
        on_done(attempt)
        return Reply(status, response_headers(upstream.raw_headers, attempt, self.debug_headers), content)
