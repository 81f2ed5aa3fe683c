"""The proxy over its default upstream client (aiohttp called directly), against real servers on loopback.

Each behaviour gateway/proxy.py and gateway/relay.py promise is driven through a real socket: header filtering
and usage, connection reuse, the failure reasons of the retry metric (connect, timeout, status_5xx, read), the
whole-response deadline, the in-stream error event on a stalled stream, and a client that leaves mid-stream
closing the engine's connection. Replies are sent to a recording ASGI ``send``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web

from gateway.attempt import Attempt
from gateway.endpoints import CircuitBreaker, Endpoint, EndpointPool, EndpointSpec
from gateway.errors import NoEndpoint, UpstreamError
from gateway.proxy import Proxy, RetryBudget
from gateway.relay import Relay
from gateway.replies import Reply, Sendable
from gateway.telemetry import GatewayMetrics
from gateway.upstream import AiohttpUpstream
from tests.support import free_port

USAGE = {"id": "x", "usage": {"prompt_tokens": 40, "completion_tokens": 2, "total_tokens": 42}}


class Engine:
    """An aiohttp server with one route per behaviour; records what it saw."""

    def __init__(self, *, sick: bool = False) -> None:
        self.sick = sick  # /ok answers 503
        self.peers: list[Any] = []
        self.reset: list[str] = []  # streams whose client connection went away
        app = web.Application()
        for path, handler in {
            "/ok": self.ok,
            "/slow": self.slow,
            "/drip": self.drip,
            "/fail": self.fail,
            "/stall": self.stall,
            "/long": self.long,
        }.items():
            app.router.add_post(path, handler)
        # a handler is cancelled when its client goes (as vLLM aborts), and shutdown does not wait for stalls
        self.runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
        self.port = free_port()

    async def ok(self, request: web.Request) -> web.Response:
        if self.sick:
            return web.Response(status=503, text="overloaded")
        self.peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        assert orjson.loads(await request.read()) == {"prompt": "hi"}
        return web.Response(
            body=orjson.dumps(USAGE),
            content_type="application/json",
            headers={"x-engine": "e1", "x-request-id": "engine-own-id", "connection": "keep-alive"},
        )

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    async def drip(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(100):
            await response.write(b"x")
            await asyncio.sleep(0.05)
        return response

    async def fail(self, request: web.Request) -> web.Response:
        return web.Response(status=503, text="overloaded")

    async def _sse(
        self, request: web.Request, chunks: int, pause_after: int, pause: float
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        try:
            for i in range(chunks):
                await response.write(b'data: {"n": %d}\n\n' % i)
                await asyncio.sleep(pause if i + 1 >= pause_after else 0.01)
            await response.write(b"data: [DONE]\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            self.reset.append(request.path)
            raise
        return response

    async def stall(self, request: web.Request) -> web.StreamResponse:
        return await self._sse(request, chunks=3, pause_after=2, pause=10)

    async def long(self, request: web.Request) -> web.StreamResponse:
        return await self._sse(request, chunks=400, pause_after=400, pause=0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Engine:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


class Recorder:
    """An ASGI ``send`` that keeps the messages."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: Any) -> None:
        self.messages.append(message)

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.messages[0]["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    async with Engine() as e:
        yield e


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    upstream = AiohttpUpstream(max_connections=10, connect_timeout=1)
    yield Proxy(
        upstream,
        GatewayMetrics(EndpointPool()),
        max_retries=1,
        budget=RetryBudget(1.0, 100.0),
        first_byte_timeout=0.5,
        stream_idle_timeout=0.3,
        retry_after=1,
        debug_headers=True,
    )
    await upstream.aclose()


def _endpoint(url: str) -> Endpoint:
    e = Endpoint(spec=EndpointSpec(url=url, model="m"), breaker=CircuitBreaker(3, 5.0, time.monotonic))
    e.healthy = True
    return e


def _idle(e: Endpoint) -> bool:
    return e.in_flight == e.active_blocks == e.prefilling == e.pending_blocks == 0


async def _forward(
    proxy: Proxy, endpoints: list[Endpoint], path: str, done: list[Attempt], stream: bool = False
) -> Sendable:
    attempt = Attempt(model="m", blocks=2, request_id="gw-id", prompt_blocks=2, want_usage=True)
    return await proxy.forward(
        endpoints, path, b'{"prompt": "hi"}', {}, stream=stream, attempt=attempt, on_done=done.append
    )


def _retries(proxy: Proxy, reason: str) -> float:
    value: float = proxy.metrics.retries.labels(reason)._value.get()
    return value


async def test_a_response_keeps_its_own_headers_and_usage_and_the_connection_is_reused(
    engine: Engine, proxy: Proxy
) -> None:
    e = _endpoint(engine.url)
    done: list[Attempt] = []
    for _ in range(2):
        reply = await _forward(proxy, [e], "/ok", done)
        assert isinstance(reply, Reply)
        sent = Recorder()
        await reply.send(sent)
        assert sent.messages[0]["status"] == 200
        headers = sent.headers
        assert headers[b"x-engine"] == b"e1"
        assert headers[b"x-request-id"] == b"gw-id"  # the gateway's id, not the engine's echo
        assert headers[b"x-flotilla-endpoint"] == e.key.encode()
        assert not {b"server", b"date", b"connection"} & {k.lower() for k in headers}
        assert [k for k, _ in sent.messages[0]["headers"]].count(b"x-request-id") == 1
        assert int(headers[b"content-length"]) == len(sent.body)
        assert orjson.loads(sent.body) == USAGE
    assert [(a.status, a.usage_tokens) for a in done] == [(200, 42), (200, 42)]
    assert engine.peers[0] == engine.peers[1]  # one pooled keep-alive connection for both
    assert _idle(e)
    assert e.served == 2


async def test_a_refused_connection_is_retried_elsewhere_as_connect(engine: Engine, proxy: Proxy) -> None:
    dead, live = _endpoint(f"http://127.0.0.1:{free_port()}"), _endpoint(engine.url)
    done: list[Attempt] = []
    reply = await _forward(proxy, [dead, live], "/ok", done)
    assert reply.status_code == 200
    assert _retries(proxy, "connect") == 1
    assert done[0].errors[0][0] == dead.key
    assert _idle(dead)
    assert _idle(live)
    assert dead.failed == 1


async def test_every_endpoint_refusing_is_503(proxy: Proxy) -> None:
    endpoints = [_endpoint(f"http://127.0.0.1:{free_port()}") for _ in range(2)]
    done: list[Attempt] = []
    with pytest.raises(NoEndpoint):
        await _forward(proxy, endpoints, "/ok", done)
    assert [(a.status, a.reason) for a in done] == [(503, "connect")]


async def test_a_5xx_is_retried_elsewhere_as_status_5xx(engine: Engine, proxy: Proxy) -> None:
    async with Engine(sick=True) as other:
        sick, healthy = _endpoint(other.url), _endpoint(engine.url)
        done: list[Attempt] = []
        reply = await _forward(proxy, [sick, healthy], "/ok", done)
    assert reply.status_code == 200
    assert _retries(proxy, "status_5xx") == 1
    assert [a.status for a in done] == [200]
    assert _idle(sick)
    assert _idle(healthy)
    assert sick.failed == 1


@pytest.mark.parametrize(
    ("path", "reason"), [("/slow", "timeout"), ("/drip", "timeout"), ("/fail", "status_5xx")]
)
async def test_a_failed_non_streaming_try_is_classified(
    engine: Engine, proxy: Proxy, path: str, reason: str
) -> None:
    e = _endpoint(engine.url)
    done: list[Attempt] = []
    started = time.monotonic()
    with pytest.raises(UpstreamError):
        await _forward(proxy, [e], path, done)
    # /drip answers at once and sends a byte every 50 ms for 5 s: first_byte_timeout (0.5 s) bounds the whole
    assert time.monotonic() - started < 2
    assert [(a.status, a.reason) for a in done] == [(502, reason)]
    assert _idle(e)
    assert e.failed == 1


async def test_a_truncated_body_is_a_read_failure(proxy: Proxy) -> None:
    async def truncated(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(truncated, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        e = _endpoint(f"http://127.0.0.1:{port}")
        done: list[Attempt] = []
        with pytest.raises(UpstreamError):
            await _forward(proxy, [e], "/v1/completions", done)
    assert [(a.status, a.reason) for a in done] == [(502, "read")]
    assert _idle(e)


async def test_a_stalled_stream_ends_with_the_error_event_and_done(engine: Engine, proxy: Proxy) -> None:
    e = _endpoint(engine.url)
    done: list[Attempt] = []
    reply = await _forward(proxy, [e], "/stall", done, stream=True)
    assert isinstance(reply, Relay)
    sent = Recorder()
    started = time.monotonic()
    await reply.send(sent)
    assert time.monotonic() - started < 3  # the 0.3 s idle timeout, not the engine's 10 s pause
    assert sent.messages[0]["status"] == 200
    assert sent.headers[b"content-type"] == b"text/event-stream"
    assert sent.body.startswith(b'data: {"n": 0}\n\ndata: {"n": 1}\n\n')
    assert b'"type":"upstream_error"' in sent.body
    assert sent.body.endswith(b"data: [DONE]\n\n")
    assert sent.messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert [a.status for a in done] == [502]
    assert proxy.metrics.stream_errors.labels(e.key)._value.get() == 1
    assert _idle(e)
    assert e.failed == 1


async def test_a_client_leaving_mid_stream_closes_the_engine_connection(engine: Engine, proxy: Proxy) -> None:
    e = _endpoint(engine.url)
    done: list[Attempt] = []
    reply = await _forward(proxy, [e], "/long", done, stream=True)
    sent = Recorder()
    task = asyncio.create_task(reply.send(sent))
    await _until(lambda: len(sent.messages) >= 4)
    task.cancel()  # what the fast path's watcher does when the client goes
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [a.status for a in done] == [499]
    assert _idle(e)
    assert e.failed == 0
    await _until(lambda: engine.reset == ["/long"])  # the engine saw the connection go (vLLM aborts)
    # and a finished stream is reported once, its connection pooled
    reply = await _forward(proxy, [e], "/stall", done, stream=True)
    await reply.send(Recorder())
    assert [a.status for a in done] == [499, 502]


async def _until(predicate: Callable[[], bool]) -> None:
    for _ in range(300):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached within 3 s")
