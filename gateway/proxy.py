"""Forwarding one request upstream: tries in routing order, retries before the first byte, relays SSE.

* **Retry** on connect errors, timeouts and 5xx *before any byte reached the client*, on the next endpoint in
  routing order, at most ``max_retries`` times, and only while the :class:`RetryBudget` allows (retries may add
  at most ``ratio`` of the request rate plus ``min_per_second``), so a sick fleet is not hit by a retry storm.
* **Non-streaming** responses are read whole before anything is sent, so a failure while reading is retried too.
* **Streaming** responses are relayed chunk by chunk without buffering. Once the first byte is out, a failure
  (connection reset, idle timeout) ends the stream with vLLM's in-stream error event and ``data: [DONE]``:
  never a hang, never a silent truncation. A client that goes away closes the upstream response, and the
  engine aborts the request.
* Timeouts: connect; for streams, a socket-read timeout of ``stream_idle_timeout`` (headers and each chunk);
  for non-streaming requests ``first_byte_timeout`` for the whole response.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.endpoints import Endpoint
from gateway.errors import NoEndpoint, UpstreamError, sse_error
from gateway.telemetry import GatewayMetrics
from gateway.upstream import timeouts

log = logging.getLogger("flotilla.gateway")

#: headers not copied between hops (RFC 9110 §7.6.1) plus those the server recomputes
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
        "proxy-connection", "content-length", "host", "authorization", "content-encoding", "date", "server"}  # fmt: skip


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


@dataclass(slots=True)
class Attempt:
    """Bookkeeping for one request as it moves through endpoints."""

    model: str
    blocks: int
    request_id: str
    tries: int = 0
    endpoint: Endpoint | None = None
    status: int = 0
    errors: list[str] = field(default_factory=list)
    #: why the last try failed: connect | timeout | status_5xx | read
    reason: str = ""
    #: the current try's load is counted on ``endpoint``
    held: bool = False
    #: prompt blocks and the routing-time prefix matches (endpoint key -> leading blocks held), for the
    #: endpoint's queued-prefill count; ``prefill`` is what the current try added there until its first byte
    prompt_blocks: int = 0
    matches: dict[str, int] = field(default_factory=dict)
    prefill: int = 0
    prefilling: bool = False


#: response header naming the endpoint that served the request (debugging, tests)
ENDPOINT_HEADER = "x-flotilla-endpoint"


def response_headers(upstream: httpx.Response, attempt: Attempt) -> dict[str, str]:
    headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
    headers["x-request-id"] = attempt.request_id
    if attempt.endpoint is not None:
        headers[ENDPOINT_HEADER] = attempt.endpoint.key
    return headers


class Proxy:
    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        metrics: GatewayMetrics,
        *,
        max_retries: int,
        budget: RetryBudget,
        first_byte_timeout: float,
        stream_idle_timeout: float,
        connect_timeout: float,
        retry_after: int,
    ) -> None:
        self.transport = transport
        self.metrics = metrics
        self.max_retries = max_retries
        self.budget = budget
        self.retry_after = retry_after
        self._extensions = {
            True: {"timeout": timeouts(connect=connect_timeout, read=stream_idle_timeout)},
            False: {"timeout": timeouts(connect=connect_timeout, read=first_byte_timeout)},
        }
        #: parsed upstream URLs by (endpoint url, path): parsed once, not per request
        self._urls: dict[tuple[str, str], httpx.URL] = {}

    def _url(self, endpoint: Endpoint, path: str) -> httpx.URL:
        key = (endpoint.url, path)
        url = self._urls.get(key)
        if url is None:
            if len(self._urls) > 10_000:
                self._urls.clear()
            url = self._urls[key] = httpx.URL(endpoint.url + path)
        return url

    @staticmethod
    def _acquire(endpoint: Endpoint, attempt: Attempt) -> None:
        endpoint.in_flight += 1
        endpoint.active_blocks += attempt.blocks
        attempt.prefill = max(0, attempt.prompt_blocks - attempt.matches.get(endpoint.key, 0))
        endpoint.pending_blocks += attempt.prefill
        endpoint.prefilling += 1
        attempt.prefilling = True
        endpoint.breaker.on_attempt()
        attempt.held = True

    @staticmethod
    def _first_byte(endpoint: Endpoint, attempt: Attempt) -> None:
        """The engine answered: this try's prefill is no longer queued there. Idempotent."""
        if attempt.prefilling:
            attempt.prefilling = False
            endpoint.prefilling -= 1
            endpoint.pending_blocks -= attempt.prefill

    @staticmethod
    def _release(endpoint: Endpoint, attempt: Attempt) -> None:
        """Give back the load counted by :meth:`_acquire`; safe to call more than once per try."""
        Proxy._first_byte(endpoint, attempt)
        if attempt.held:
            attempt.held = False
            endpoint.in_flight -= 1
            endpoint.active_blocks -= attempt.blocks

    def _failed(self, endpoint: Endpoint, attempt: Attempt, reason: str, detail: str) -> None:
        endpoint.breaker.on_failure()
        endpoint.failed += 1
        attempt.reason = reason
        attempt.errors.append(f"{endpoint.key}: {detail}")

    @staticmethod
    def _reason(exc: httpx.HTTPError) -> str:
        # connect first: the aiohttp transport reports a refused connection as ConnectTimeout
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return "connect"
        if isinstance(exc, httpx.TimeoutException):
            return "timeout"
        return "read"

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
    ) -> Response:
        self.budget.deposit()
        started = time.perf_counter()
        extensions = self._extensions[stream]
        for endpoint in ranked:
            if attempt.tries > self.max_retries:
                break
            if not endpoint.breaker.allows():
                continue
            if attempt.tries > 0:
                if not self.budget.withdraw():
                    self.metrics.retries.labels("budget_exhausted").inc()
                    break
                self.metrics.retries.labels(attempt.reason).inc()
            attempt.tries += 1
            attempt.endpoint = endpoint
            self._acquire(endpoint, attempt)
            try:
                response = await self._try(
                    endpoint, path, body, headers, extensions, stream, attempt, started, on_done
                )
            except asyncio.CancelledError:  # the client went away before the first byte: abort upstream too
                self._release(endpoint, attempt)
                attempt.status = 499
                on_done(attempt)
                raise
            if response is not None:
                return response
        if attempt.tries == 0:
            self.metrics.rejections.labels("no_endpoint").inc()
            raise NoEndpoint(
                f"no healthy endpoint can serve model '{attempt.model}' right now",
                headers={"retry-after": str(self.retry_after)},
            )
        if attempt.reason in ("connect", "breaker"):
            attempt.status = 503
            on_done(attempt)
            raise NoEndpoint(
                f"no endpoint reachable for model '{attempt.model}': {'; '.join(attempt.errors[-3:])}",
                headers={"retry-after": str(self.retry_after)},
            )
        attempt.status = 502
        on_done(attempt)
        raise UpstreamError(
            f"upstream failed after {attempt.tries} attempt(s): {'; '.join(attempt.errors[-3:])}",
            headers={"retry-after": str(self.retry_after)},
        )

    async def _try(
        self,
        endpoint: Endpoint,
        path: str,
        body: bytes,
        headers: dict[str, str],
        extensions: dict[str, Any],
        stream: bool,
        attempt: Attempt,
        started: float,
        on_done: Callable[[Attempt], None],
    ) -> Response | None:
        """One try on ``endpoint`` (already acquired). None = failed before the first byte (released)."""
        request = httpx.Request(
            "POST", self._url(endpoint, path), content=body, headers=headers, extensions=extensions
        )
        try:
            upstream = await self.transport.handle_async_request(request)
        except httpx.HTTPError as exc:
            self._release(endpoint, attempt)
            self._failed(endpoint, attempt, self._reason(exc), f"{type(exc).__name__} {exc}")
            return None
        if upstream.status_code >= 500:
            await upstream.aclose()
            self._release(endpoint, attempt)
            self._failed(endpoint, attempt, "status_5xx", f"HTTP {upstream.status_code}")
            return None
        endpoint.breaker.on_success()
        attempt.status = upstream.status_code
        if stream and upstream.status_code == 200:
            closer = _Closer(self, upstream, endpoint, attempt, on_done)
            return RelayResponse(
                self._relay(upstream, endpoint, attempt, started, closer),
                closer,
                headers=response_headers(upstream, attempt),
            )
        try:
            content = await upstream.aread()
        except httpx.HTTPError as exc:
            self._release(endpoint, attempt)
            self._failed(endpoint, attempt, self._reason(exc), f"{type(exc).__name__} {exc}")
            return None
        finally:
            await upstream.aclose()
        self._release(endpoint, attempt)
        endpoint.served += 1
        self.metrics.ttft.labels(attempt.model).observe(time.perf_counter() - started)
        on_done(attempt)
        return Response(
            content, status_code=upstream.status_code, headers=response_headers(upstream, attempt)
        )

    async def _relay(
        self, upstream: httpx.Response, endpoint: Endpoint, attempt: Attempt, started: float, closer: _Closer
    ) -> AsyncIterator[bytes]:
        model = attempt.model
        itl = self.metrics.itl.labels(model)
        last = 0.0
        try:
            async for chunk in upstream.aiter_raw():
                now = time.perf_counter()
                if last:
                    itl.observe(now - last)
                else:
                    self.metrics.ttft.labels(model).observe(now - started)
                    self._first_byte(endpoint, attempt)
                last = now
                yield chunk
            endpoint.served += 1
        except httpx.HTTPError as exc:
            self._failed(endpoint, attempt, "stream", f"{type(exc).__name__} {exc}")
            self.metrics.stream_errors.labels(endpoint.key).inc()
            attempt.status = 502
            log.warning("stream from %s broke: %s: %s", endpoint.key, type(exc).__name__, exc)
            yield sse_error(f"upstream {endpoint.key} failed mid-stream: {type(exc).__name__}")
        except (asyncio.CancelledError, GeneratorExit):
            attempt.status = 499  # the client went away mid-stream; closing upstream aborts the engine's work
            raise
        finally:
            await closer()


class _Closer:
    """Ends a relayed stream exactly once, whether it finished, broke, or never started (client gone)."""

    __slots__ = ("attempt", "done", "endpoint", "on_done", "proxy", "upstream")

    def __init__(
        self,
        proxy: Proxy,
        upstream: httpx.Response,
        endpoint: Endpoint,
        attempt: Attempt,
        on_done: Callable[[Attempt], None],
    ) -> None:
        self.proxy, self.upstream, self.endpoint, self.attempt, self.on_done = (
            proxy,
            upstream,
            endpoint,
            attempt,
            on_done,
        )
        self.done = False

    async def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        self.proxy._release(self.endpoint, self.attempt)
        try:
            await self.upstream.aclose()
        finally:
            self.on_done(self.attempt)


class RelayResponse(StreamingResponse):
    def __init__(self, content: AsyncIterator[bytes], closer: _Closer, *, headers: dict[str, str]) -> None:
        super().__init__(content, status_code=200, headers=headers)
        self._closer = closer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except (OSError, ClientDisconnect):  # the client went away mid-stream (nothing to answer)
            self._closer.attempt.status = 499
        finally:
            await self._closer()
