"""The upstream HTTP transport: httpx, over either aiohttp's connection pool or httpx's own.

httpx is the client API everywhere (its Request/Response types and exception tree, injectable transports), but
its default pool (httpcore) costs several times more CPU per request than aiohttp's under concurrency
(encode/httpx#3215; our numbers are in docs/benchmarks.md, section "gateway"). ``transport="aiohttp"`` keeps the
httpx API and moves the wire work to aiohttp through ``httpx-aiohttp``'s transport. Both set TCP_NODELAY so
small SSE chunks and request bodies are not held back by Nagle's algorithm.

The proxy calls the transport directly (``handle_async_request``), not through ``httpx.AsyncClient``: a proxy
needs none of the client's cookie jar, redirect handling, auth flow or URL merging, and skipping them removed
about a sixth of the gateway's CPU per request in profiles.
"""

from __future__ import annotations

import socket

import httpx


def make_transport(transport: str, *, max_connections: int) -> httpx.AsyncBaseTransport:
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections, keepalive_expiry=60
    )
    if transport == "aiohttp":
        import aiohttp
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


def timeouts(*, connect: float, read: float) -> dict[str, float]:
    """The per-request ``timeout`` extension httpx transports read (connect, read, write, pool)."""
    return {"connect": connect, "read": read, "write": read, "pool": connect}
