"""The upstream HTTP client of the proxy: aiohttp called directly, or any httpx transport behind the same seam.

The proxy's hot path speaks to engines through :class:`AiohttpUpstream`: one ``aiohttp.ClientSession`` and
``TCPConnector`` per gateway (aiohttp sets TCP_NODELAY on its sockets, so small SSE chunks and request bodies
are not held back by Nagle's algorithm), no cookie jar, no proxies from the environment, no redirects, no
decompression (bodies are relayed as raw bytes). Before, the proxy built an httpx ``Request`` per try and
ran it through ``httpx-aiohttp``'s transport, which wraps aiohttp's response in an httpx ``Response`` and
maps its exceptions: the upstream round trip was ~22 % of the gateway's CPU per request in profiles, 5–8
points of it httpx's objects and the wrapper; calling aiohttp directly leaves aiohttp's own work, the same a
bare pass-through proxy pays (docs/benchmarks.md, section "gateway", "The wire path").

:class:`HttpxUpstream` runs the same calls over any ``httpx.AsyncBaseTransport``: ``transport="httpx"``
(httpx's own pool, measured 4× the CPU per request of aiohttp's, kept for an environment where aiohttp
misbehaves) and the unit tests' scripted transports, which reproduce failures exactly without sockets.

Each classifies a failed try for the retry metric's ``reason`` label and the refill decision; aiohttp's
classification is exactly what ``httpx-aiohttp``'s exception mapping made of aiohttp's errors before:

* ``connect`` — no response came: refused, reset or closed before the headers, connect timeout (a pooled
  connection to a pod that just died fails like this, so it is treated like a refused one; httpx's own pool
  reports a reset before the headers as a read error);
* ``timeout`` — a read timed out (headers or body), or the whole-response deadline passed;
* ``read`` — anything else: a malformed or truncated response.

The scrape client (gateway/scraper.py) keeps the httpx API over aiohttp's pool (:func:`make_transport`): it is
off the request path, and its parsing code is written against httpx.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

import aiohttp
import httpx
from yarl import URL

#: response headers as raw (name, value) byte pairs, as ASGI sends them
RawHeaders = Sequence[tuple[bytes, bytes]]


class UpstreamResponse(Protocol):
    """An engine's response whose headers have arrived; the body is read whole or relayed chunk by chunk."""

    status: int

    @property
    def raw_headers(self) -> RawHeaders: ...

    async def read(self) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (raw bytes, one item per socket read)."""
        ...

    async def close(self, *, complete: bool) -> None:
        """Give the connection back to the pool if the body was read to its end, else close it (the engine
        sees the client go and aborts the request)."""
        ...


class Upstream(Protocol):
    async def post(
        self, url: str, body: bytes, headers: dict[str, str], *, read_timeout: float, total: float | None
    ) -> UpstreamResponse:
        """Send a POST and wait for the response headers. ``read_timeout`` bounds each socket read, ``total``
        (if given) the whole exchange, the body's :meth:`UpstreamResponse.read` included."""
        ...

    def reason(self, exc: Exception) -> str:
        """``connect`` | ``timeout`` | ``read`` for an exception a try raised."""
        ...

    async def aclose(self) -> None: ...


class _AiohttpResponse:
    __slots__ = ("raw_headers", "response", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.status = response.status
        self.raw_headers = response.raw_headers

    async def read(self) -> bytes:
        return await self.response.read()

    def chunks(self) -> AsyncIterator[bytes]:
        return self.response.content.iter_any()

    async def close(self, *, complete: bool) -> None:
        if complete:
            self.response.release()
        else:
            self.response.close()


class AiohttpUpstream:
    """aiohttp's pool, called directly. Build it on the running loop (``Gateway.start``)."""

    def __init__(self, *, max_connections: int, connect_timeout: float) -> None:
        connector = aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=60, ttl_dns_cache=10)
        self.session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,  # engines are dialled directly, never through an HTTP(S)_PROXY
            auto_decompress=False,
        )
        self.connect_timeout = connect_timeout
        self._timeouts: dict[tuple[float, float | None], aiohttp.ClientTimeout] = {}
        #: parsed URLs by text: parsed once per (endpoint, path), not per request
        self._urls: dict[str, URL] = {}

    def _timeout(self, read: float, total: float | None) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get((read, total))
        if timeout is None:
            c = self.connect_timeout
            # aiohttp's total runs until the body is read (one timer per request; an asyncio.timeout around
            # the request and another around the body read cost twice that in profiles)
            timeout = aiohttp.ClientTimeout(total=total, sock_connect=c, connect=c, sock_read=read)
            self._timeouts[(read, total)] = timeout
        return timeout

    async def post(
        self, url: str, body: bytes, headers: dict[str, str], *, read_timeout: float, total: float | None
    ) -> UpstreamResponse:
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) > 10_000:
                self._urls.clear()
            parsed = self._urls[url] = URL(url)
        response = await self.session.post(
            parsed,
            data=body,
            headers=headers,
            timeout=self._timeout(read_timeout, total),
            allow_redirects=False,
        )
        return _AiohttpResponse(response)

    def reason(self, exc: Exception) -> str:
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return "connect"
        if isinstance(exc, TimeoutError):  # a socket read timeout, or the whole-response deadline (total)
            return "timeout"
        if isinstance(exc, aiohttp.ClientConnectionError):
            return "connect"
        return "read"

    async def aclose(self) -> None:
        await self.session.close()


class _HttpxResponse:
    __slots__ = ("deadline", "raw_headers", "response", "status")

    def __init__(self, response: httpx.Response, deadline: float | None) -> None:
        self.response, self.deadline = response, deadline
        self.status = response.status_code
        self.raw_headers = response.headers.raw

    async def read(self) -> bytes:
        async with asyncio.timeout_at(self.deadline):
            return await self.response.aread()

    def chunks(self) -> AsyncIterator[bytes]:
        return self.response.aiter_raw()

    async def close(self, *, complete: bool) -> None:
        await self.response.aclose()


class HttpxUpstream:
    """Any httpx transport behind the proxy's seam (``transport="httpx"``; tests' scripted transports)."""

    def __init__(self, transport: httpx.AsyncBaseTransport, *, connect_timeout: float) -> None:
        self.transport = transport
        self.connect_timeout = connect_timeout

    async def post(
        self, url: str, body: bytes, headers: dict[str, str], *, read_timeout: float, total: float | None
    ) -> UpstreamResponse:
        c = self.connect_timeout
        timeout = {"connect": c, "read": read_timeout, "write": read_timeout, "pool": c}
        request = httpx.Request("POST", url, content=body, headers=headers, extensions={"timeout": timeout})
        deadline = None if total is None else asyncio.get_running_loop().time() + total
        async with asyncio.timeout_at(deadline):
            response = await self.transport.handle_async_request(request)
        return _HttpxResponse(response, deadline)

    def reason(self, exc: Exception) -> str:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return "connect"
        if isinstance(exc, httpx.TimeoutException | TimeoutError):
            return "timeout"
        return "read"

    async def aclose(self) -> None:
        await self.transport.aclose()


def make_upstream(transport: str, *, max_connections: int, connect_timeout: float) -> Upstream:
    """The proxy's upstream client for the ``transport`` setting (``aiohttp`` | ``httpx``)."""
    if transport == "aiohttp":
        return AiohttpUpstream(max_connections=max_connections, connect_timeout=connect_timeout)
    return HttpxUpstream(
        make_transport(transport, max_connections=max_connections), connect_timeout=connect_timeout
    )


def make_transport(transport: str, *, max_connections: int) -> httpx.AsyncBaseTransport:
    """An httpx transport over aiohttp's pool (``httpx-aiohttp``) or httpx's own (the scrape client's)."""
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections, keepalive_expiry=60
    )
    if transport == "aiohttp":
        from httpx_aiohttp import AiohttpTransport

        def session() -> aiohttp.ClientSession:
            connector = aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=60, ttl_dns_cache=10)
            # aiohttp sets TCP_NODELAY on its sockets; no cookie jar for a proxy
            return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

        return AiohttpTransport(client=session, limits=limits)
    if transport == "httpx":
        return httpx.AsyncHTTPTransport(
            limits=limits, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)], retries=0
        )
    raise ValueError(f"unknown transport {transport!r} (aiohttp | httpx)")
