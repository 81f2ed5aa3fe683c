"""What the proxied routes answer with: responses sent by raw ASGI ``send`` calls.

A Starlette ``Response`` per request builds a header object (lower-casing and re-encoding every header), a
``StreamingResponse`` under uvicorn (ASGI spec 2.3) adds a task group and a disconnect listener per stream.
The gateway's fast path (gateway/app.py ``FastPath``) already watches for the client going away, and the engine's
headers arrive as raw bytes, so a reply here is just its status, raw headers and body (or, for a relayed
stream, gateway/proxy.py ``Relay``), sent with two ``send`` calls. :class:`AsResponse` adapts one to
Starlette where FastAPI's declared routes need a ``Response`` (only when the fast path is not installed).
"""

from __future__ import annotations

from typing import Protocol

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

Headers = list[tuple[bytes, bytes]]


class Sendable(Protocol):
    status_code: int
    headers: Headers

    def add_headers(self, headers: dict[str, str]) -> None: ...

    async def send(self, send: Send) -> None:
        """Send the whole response; also ends what it holds (an upstream stream) on every exit path."""
        ...


def encode(headers: dict[str, str]) -> Headers:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


class Reply:
    """A complete response: status, raw headers and body (``content-length`` is added when sent)."""

    __slots__ = ("body", "headers", "status_code")

    def __init__(self, status_code: int, headers: Headers, body: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.body = body

    def add_headers(self, headers: dict[str, str]) -> None:
        self.headers += encode(headers)

    async def send(self, send: Send) -> None:
        headers = self.headers
        headers.append((b"content-length", b"%d" % len(self.body)))
        await send({"type": "http.response.start", "status": self.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


class AsResponse(Response):
    """A :class:`Sendable` where Starlette wants a ``Response`` (FastAPI's declared routes)."""

    def __init__(self, reply: Sendable) -> None:  # no super().__init__: nothing of Response's is used
        self.reply = reply
        self.status_code = reply.status_code
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.reply.send(send)
