"""Relaying an engine's response to the client with raw ASGI ``send`` calls: headers, usage, SSE streams.

A stream is forwarded one upstream read at a time, without buffering. Once its first byte is out, a failure
reading from the engine (connection reset, idle timeout) ends it with vLLM's in-stream error event and
``data: [DONE]``: never a hang, never a silent truncation. A client that goes away (the fast path cancels the
request's task, or the server's ``send`` raises) closes the upstream connection instead of returning it to the
pool, so the engine sees the disconnect and aborts the request. Whatever happens, the endpoint's lease is
released and ``on_done`` runs exactly once (:meth:`Relay.end`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import orjson
from starlette.types import Send

from flotilla import labels
from gateway.attempt import Attempt
from gateway.endpoints import Lease
from gateway.errors import sse_error
from gateway.replies import Headers, encode
from gateway.telemetry import GatewayMetrics
from gateway.upstream import RawHeaders, UpstreamResponse

log = logging.getLogger("flotilla.gateway")

#: headers not copied between hops (RFC 9110 §7.6.1) plus those the server recomputes
_HOP = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade", b"proxy-authorization",
     b"proxy-connection", b"content-length", b"host", b"authorization", b"content-encoding", b"date", b"server"}
)  # fmt: skip
_REQUEST_ID = labels.HEADER_REQUEST_ID.encode()
_ENDPOINT = labels.HEADER_ENDPOINT.encode()
#: and the gateway's own, set below (an engine echoes the request id)
_DROPPED = _HOP | {_REQUEST_ID, _ENDPOINT}


def response_headers(raw: RawHeaders, attempt: Attempt, debug: bool) -> Headers:
    """The engine's headers without hop-by-hop ones, plus the request id (and the engine, when asked)."""
    headers = [(k, v) for k, v in raw if k.lower() not in _DROPPED]
    headers.append((_REQUEST_ID, attempt.request_id.encode("latin-1")))
    if debug and attempt.endpoint is not None:  # an engine's address is internal: only when asked for
        headers.append((_ENDPOINT, attempt.endpoint.key.encode("latin-1")))
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


class Relay:
    """A streamed (SSE) response being relayed; sent once by :meth:`send`, ended once by :meth:`end`."""

    __slots__ = ("attempt", "done", "headers", "lease", "metrics", "on_done", "started", "upstream")

    status_code = 200

    def __init__(
        self,
        upstream: UpstreamResponse,
        lease: Lease,
        attempt: Attempt,
        *,
        metrics: GatewayMetrics,
        started: float,
        headers: Headers,
        on_done: Callable[[Attempt], None],
    ) -> None:
        self.upstream, self.lease, self.attempt, self.on_done = upstream, lease, attempt, on_done
        self.metrics, self.started, self.headers = metrics, started, headers
        self.done = False

    def add_headers(self, headers: dict[str, str]) -> None:
        self.headers += encode(headers)

    async def send(self, send: Send) -> None:
        attempt, lease = self.attempt, self.lease
        complete = False
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.headers})
            itl = self.metrics.itl.labels(attempt.model)
            last = 0.0
            chunks = self.upstream.chunks().__aiter__()
            while True:
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    complete = True
                    lease.endpoint.served += 1
                    break
                except (
                    Exception
                ) as exc:  # any transport failure mid-stream ends the stream with an error event
                    self._broke(exc)
                    await send({"type": "http.response.body", "body": self._error(exc), "more_body": True})
                    break
                now = time.perf_counter()
                if last:
                    itl.observe(now - last)
                else:
                    self.metrics.ttft.labels(attempt.model).observe(now - self.started)
                    lease.first_byte()
                last = now
                if attempt.want_usage:
                    attempt.usage_tokens = usage_from_sse(chunk) or attempt.usage_tokens
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            # ended before the last message: once the response is complete, uvicorn answers receive() with
            # http.disconnect, which the fast path's watcher would take for the client leaving if anything
            # here still awaited (closing an httpx response may)
            await self.end(complete=complete)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            attempt.status = 499  # the client went away mid-stream; closing upstream aborts the engine's work
            raise
        except OSError:  # the server could not write to the client: gone too (nothing to answer)
            attempt.status = 499
        finally:
            await self.end(complete=complete)

    def _broke(self, exc: Exception) -> None:
        endpoint = self.lease.endpoint
        self.lease.failed()
        self.attempt.errors.append((endpoint.key, type(exc).__name__))
        self.metrics.stream_errors.labels(endpoint.key).inc()
        self.attempt.status = 502
        log.warning("stream from %s broke: %s: %s", endpoint.key, type(exc).__name__, exc)

    @staticmethod
    def _error(exc: Exception) -> bytes:
        return sse_error(f"upstream failed mid-stream: {type(exc).__name__}")

    async def end(self, *, complete: bool = False) -> None:
        """Release the lease, close (or pool) the upstream connection and report the end: once."""
        if self.done:
            return
        self.done = True
        self.lease.release()
        try:
            await self.upstream.close(complete=complete)
        except Exception as exc:  # closing a broken connection may raise; the stream is over either way
            log.debug("closing upstream stream failed: %s", type(exc).__name__)
        finally:
            self.on_done(self.attempt)
