"""How the gateway is served: uvicorn with httptools, plus the limits httptools itself does not enforce.

uvicorn's httptools protocol reads a request head of any size for as long as the client cares to send it: a
20 MB header was accepted, and a client trickling a header byte every few seconds (slowloris) held a connection
open forever. :class:`GuardedHttpTools` bounds both, per connection, before the application sees anything:

- the request head (request line + headers) may be at most ``max_header_bytes``; beyond, ``431 Request Header
  Fields Too Large`` and the connection is closed;
- the head must arrive within ``header_timeout`` seconds of the connection opening, or, on a kept-alive
  connection, of the first byte of the next request; otherwise the connection is closed. (An idle kept-alive
  connection is uvicorn's ``timeout_keep_alive`` to close.)

Bodies are bounded by the application (``max_body_bytes``, 413), idle kept-alive connections by uvicorn's
``timeout_keep_alive``. Every gateway process — ``flotilla gateway``, ``flotilla up``, the test harness —
builds its server from :func:`server_config`, so what is tested is what runs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.settings import GatewaySettings

_TOO_LARGE_BODY = (
    b'{"error": {"message": "request headers too large", "type": "invalid_request_error", '
    b'"param": null, "code": "request_header_fields_too_large"}}'
)
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"content-length: "
    + str(len(_TOO_LARGE_BODY)).encode()
    + b"\r\nconnection: close\r\n\r\n"
    + _TOO_LARGE_BODY
)


class GuardedHttpTools(HttpToolsProtocol):
    max_header_bytes = 64 * 1024
    header_timeout = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0
        self._reading_head = True
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self._reading_head and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._reading_head and self._head_timer is None:
            self._arm()  # the first byte of the next request on a kept-alive connection
        was_reading_head = self._reading_head
        super().data_received(data)
        if was_reading_head and self._reading_head:  # the whole chunk was head: count it
            self._head_bytes += len(data)
            if self._head_bytes > self.max_header_bytes and not self.transport.is_closing():
                self.transport.write(_TOO_LARGE)
                self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head = True

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_bytes = 0
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._reading_head = True  # the next head's clock starts with its first byte (data_received)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def protocol_for(settings: GatewaySettings) -> type[GuardedHttpTools]:
    """A protocol class carrying this gateway's limits (uvicorn instantiates it per connection)."""
    return type(
        "GatewayHttpProtocol",
        (GuardedHttpTools,),
        {"max_header_bytes": settings.max_header_bytes, "header_timeout": settings.header_timeout},
    )


def server_config(app: Any, settings: GatewaySettings, **overrides: Any) -> uvicorn.Config:
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": protocol_for(settings),
        "access_log": False,  # one JSON line per request comes from the gateway itself
        "log_level": "warning",
        "timeout_keep_alive": 30,
        # nothing in the gateway reads the client's address or scheme; uvicorn's X-Forwarded-* rewriting would
        # copy every request's headers into a dict for it
        "proxy_headers": False,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)
