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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from flotilla import labels
from gateway.endpoints import Endpoint, Lease
from gateway.errors import GatewayError, NoEndpoint, UpstreamError, sse_error
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


#: given the keys of endpoints already tried, endpoints to try next (may wait for them; raises when none come)
Refill = Callable[[set[str]], Awaitable[list[Endpoint]]]


def response_headers(upstream: httpx.Response, attempt: Attempt, debug: bool) -> dict[str, str]:
    headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
    headers[labels.HEADER_REQUEST_ID] = attempt.request_id
    if debug and attempt.endpoint is not None:  # an engine's address is internal: only when asked for
        headers[labels.HEADER_ENDPOINT] = attempt.endpoint.key
    return headers


def usage_from_json(content: bytes) -> int | None:
    """``usage.total_tokens`` of an OpenAI response body, or None."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    usage = body.get("usage") if isinstance(body, dict) else None
    total = usage.get("total_tokens") if isinstance(usage, dict) else None
    return total if isinstance(total, int) and not isinstance(total, bool) and total >= 0 else None


def usage_from_sse(chunk: bytes) -> int | None:
    """``usage.total_tokens`` from the usage chunk of a stream (``stream_options.include_usage``), or None.

    Cheap on the chunks that carry none (one substring test); a usage event split across two reads is missed
    and the admission estimate then stands.
    """
    if b'"usage":{' not in chunk and b'"usage": {' not in chunk:
        return None
    found = None
    for line in chunk.split(b"\n"):
        if line.startswith(b"data: {") and b'"usage"' in line:
            found = usage_from_json(line[6:]) or found
    return found


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
        debug_headers: bool = False,
    ) -> None:
        self.transport = transport
        self.debug_headers = debug_headers
        self.metrics = metrics
        self.max_retries = max_retries
        self.budget = budget
        self.retry_after = retry_after
        self.first_byte_timeout = first_byte_timeout
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

    def _failed(self, lease: Lease, attempt: Attempt, reason: str, detail: str) -> None:
        lease.release()
        lease.failed()
        attempt.reason = reason
        attempt.errors.append((lease.endpoint.key, detail))

    @staticmethod
    def _reason(exc: Exception) -> str:
        # connect first: the aiohttp transport reports a refused connection as ConnectTimeout
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return "connect"
        if isinstance(exc, httpx.TimeoutException | TimeoutError):
            return "timeout"
        # anything else — httpx's read errors, or an exception of the transport's own library that httpx-aiohttp
        # does not map (aiohttp's ClientResponseError for an oversized response header) — is a broken response
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
        refill: Refill | None = None,
    ) -> Response:
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
    ) -> Response | None:
        """One pass over ``ranked`` (at most ``1 + max_retries`` tries); None = nothing succeeded."""
        extensions = self._extensions[stream]
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
                response = await self._try(
                    lease, path, body, headers, extensions, stream, attempt, started, on_done
                )
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
        extensions: dict[str, Any],
        stream: bool,
        attempt: Attempt,
        started: float,
        on_done: Callable[[Attempt], None],
    ) -> Response | None:
        """One try under ``lease``. None = failed before the first byte (released, verdict given)."""
        endpoint = lease.endpoint
        request = httpx.Request(
            "POST", self._url(endpoint, path), content=body, headers=headers, extensions=extensions
        )
        # non-streaming: first_byte_timeout bounds the whole response, not each read (an engine dripping a byte
        # at a time would otherwise hold the request for ever); streams: the per-read idle timeout applies
        deadline = None if stream else asyncio.get_running_loop().time() + self.first_byte_timeout
        try:
            async with asyncio.timeout_at(deadline):
                upstream = await self.transport.handle_async_request(request)
        except Exception as exc:  # the boundary: any transport failure is this try's failure
            self._failed(lease, attempt, self._reason(exc), f"{type(exc).__name__}")
            return None
        if upstream.status_code >= 500:
            await upstream.aclose()
            self._failed(lease, attempt, "status_5xx", f"HTTP {upstream.status_code}")
            return None
        lease.succeeded()
        attempt.status = upstream.status_code
        if stream and upstream.status_code == 200:
            closer = _Closer(upstream, lease, attempt, on_done)
            return RelayResponse(
                self._relay(upstream, lease, attempt, started, closer),
                closer,
                headers=response_headers(upstream, attempt, self.debug_headers),
            )
        try:
            async with asyncio.timeout_at(deadline):
                content = await upstream.aread()
        except Exception as exc:
            self._failed(lease, attempt, self._reason(exc), f"{type(exc).__name__}")
            return None
        finally:
            await upstream.aclose()
        lease.release()
        endpoint.served += 1
        self.metrics.ttft.labels(attempt.model).observe(time.perf_counter() - started)
        if attempt.want_usage and upstream.status_code == 200:
            attempt.usage_tokens = usage_from_json(content)
        on_done(attempt)
        return Response(
            content,
            status_code=upstream.status_code,
            headers=response_headers(upstream, attempt, self.debug_headers),
        )

    async def _relay(
        self, upstream: httpx.Response, lease: Lease, attempt: Attempt, started: float, closer: _Closer
    ) -> AsyncIterator[bytes]:
        model = attempt.model
        endpoint = lease.endpoint
        itl = self.metrics.itl.labels(model)
        last = 0.0
        try:
            async for chunk in upstream.aiter_raw():
                now = time.perf_counter()
                if last:
                    itl.observe(now - last)
                else:
                    self.metrics.ttft.labels(model).observe(now - started)
                    lease.first_byte()
                last = now
                if attempt.want_usage:
                    attempt.usage_tokens = usage_from_sse(chunk) or attempt.usage_tokens
                yield chunk
            endpoint.served += 1
        except Exception as exc:  # any transport failure mid-stream ends the stream with an error event
            lease.failed()
            attempt.errors.append((endpoint.key, type(exc).__name__))
            self.metrics.stream_errors.labels(endpoint.key).inc()
            attempt.status = 502
            log.warning("stream from %s broke: %s: %s", endpoint.key, type(exc).__name__, exc)
            yield sse_error(f"upstream failed mid-stream: {type(exc).__name__}")
        except (asyncio.CancelledError, GeneratorExit):
            attempt.status = 499  # the client went away mid-stream; closing upstream aborts the engine's work
            raise
        finally:
            await closer()


class _Closer:
    """Ends a relayed stream exactly once, whether it finished, broke, or never started (client gone)."""

    __slots__ = ("attempt", "done", "lease", "on_done", "upstream")

    def __init__(
        self, upstream: httpx.Response, lease: Lease, attempt: Attempt, on_done: Callable[[Attempt], None]
    ) -> None:
        self.upstream, self.lease, self.attempt, self.on_done = upstream, lease, attempt, on_done
        self.done = False

    async def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        self.lease.release()
        try:
            await self.upstream.aclose()
        except Exception as exc:  # closing a broken connection may raise; the stream is over either way
            log.debug("closing upstream stream failed: %s", type(exc).__name__)
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
