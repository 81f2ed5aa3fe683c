"""The upstream HTTP client: httpx, over either aiohttp's connection pool or httpx's own.

httpx is the client API everywhere (one exception tree, injectable transports), but its default pool
(httpcore) costs several times more CPU per request than aiohttp's under concurrency (encode/httpx#3215; our
numbers are in docs/benchmarks.md, section "gateway"). ``transport="aiohttp"`` keeps the httpx API and moves
the wire work to aiohttp through ``httpx-aiohttp``'s transport. Both set TCP_NODELAY so small SSE chunks and
request bodies are not held back by Nagle's algorithm.
"""

from __future__ import annotations

import socket

import httpx


def make_client(
    transport: str, *, max_connections: int, connect_timeout: float, read_timeout: float
) -> httpx.AsyncClient:
    timeout = httpx.Timeout(
        connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
    )
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections, keepalive_expiry=60
    )
    if transport == "aiohttp":
        import aiohttp
        from httpx_aiohttp import AiohttpTransport

        def session() -> aiohttp.ClientSession:
            connector = aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=60, ttl_dns_cache=10)
            return aiohttp.ClientSession(connector=connector)  # aiohttp sets TCP_NODELAY on its sockets

        return httpx.AsyncClient(transport=AiohttpTransport(client=session), timeout=timeout, limits=limits)
    if transport == "httpx":
        pool = httpx.AsyncHTTPTransport(
            limits=limits, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)], retries=0
        )
        return httpx.AsyncClient(transport=pool, timeout=timeout, limits=limits)
    raise ValueError(f"unknown transport {transport!r} (aiohttp | httpx)")
