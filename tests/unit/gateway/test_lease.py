"""One owner for an endpoint's load and breaker trial: every exit path gives both back.

The proxy runs over an injected httpx transport here (behind gateway/upstream.py's ``HttpxUpstream``), so a
failure of a kind httpx does not know — what aiohttp raised for an oversized response header — is reproduced
exactly, with no sockets. (tests/integration/test_gateway_upstream.py covers the default aiohttp client.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from gateway.attempt import Attempt
from gateway.endpoints import CircuitBreaker, Endpoint, EndpointPool, EndpointSpec, Lease
from gateway.errors import NoEndpoint, UpstreamError
from gateway.proxy import Proxy, RetryBudget
from gateway.telemetry import GatewayMetrics
from gateway.upstream import HttpxUpstream


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class ScriptedTransport(httpx.AsyncBaseTransport):
    """Answers each request with the next action: an exception to raise, a coroutine to await, or a status."""

    def __init__(self, *actions: object) -> None:
        self.actions = list(actions)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        action = self.actions.pop(0)
        if isinstance(action, BaseException):
            raise action
        if callable(action):
            await action()
        return httpx.Response(int(action) if isinstance(action, int) else 200, content=b'{"ok": true}')


def _endpoint(clock: Callable[[], float], port: int = 1) -> Endpoint:
    e = Endpoint(
        spec=EndpointSpec(url=f"http://127.0.0.1:{port}", model="m"), breaker=CircuitBreaker(1, 5.0, clock)
    )
    e.healthy = True
    return e


def _proxy(transport: httpx.AsyncBaseTransport, max_retries: int = 0) -> Proxy:
    return Proxy(
        HttpxUpstream(transport, connect_timeout=1),
        GatewayMetrics(EndpointPool()),
        max_retries=max_retries,
        budget=RetryBudget(1.0, 100.0),
        first_byte_timeout=5,
        stream_idle_timeout=5,
        retry_after=1,
    )


def _idle(e: Endpoint) -> bool:
    return e.in_flight == e.active_blocks == e.prefilling == e.pending_blocks == 0


def _attempt() -> Attempt:
    return Attempt(model="m", blocks=4, request_id="r", prompt_blocks=3)


def test_a_lease_counts_load_until_released_once() -> None:
    e = _endpoint(Clock())
    lease = Lease(e, blocks=4, prefill=3)
    assert (e.in_flight, e.active_blocks, e.prefilling, e.pending_blocks) == (1, 4, 1, 3)
    lease.first_byte()
    assert (e.prefilling, e.pending_blocks) == (0, 0)
    lease.release()
    lease.release()
    assert _idle(e)


def test_an_abandoned_half_open_trial_lets_the_next_request_try() -> None:
    clock = Clock()
    e = _endpoint(clock)
    e.breaker.on_failure()
    assert e.breaker.state == "open"
    clock.now += 5.0
    assert e.breaker.allows()
    trial = Lease(e, blocks=1, prefill=1)
    assert not e.breaker.allows()  # one trial at a time
    trial.release()  # the client went away before the engine answered: no verdict
    assert e.breaker.state == "half-open"
    assert e.breaker.allows()


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(
            RuntimeError("aiohttp ClientResponseError: header value too long"), id="foreign-exception"
        ),
        pytest.param(httpx.ReadError("reset"), id="httpx-read"),
        pytest.param(503, id="status-5xx"),
    ],
)
async def test_every_failed_try_gives_its_load_back(failure: object) -> None:
    e = _endpoint(Clock())
    done: list[Attempt] = []
    with pytest.raises(UpstreamError):
        await _proxy(ScriptedTransport(failure)).forward(
            [e], "/v1/completions", b"{}", {}, stream=False, attempt=_attempt(), on_done=done.append
        )
    assert _idle(e)
    assert e.failed == 1
    assert e.breaker.state == "open"  # threshold 1: the failure counted
    assert [a.status for a in done] == [502]
    assert "127.0.0.1" not in str(done[0].errors[0][1])  # details for clients carry no engine address


async def test_a_client_gone_during_a_half_open_trial_does_not_wedge_the_breaker() -> None:
    clock = Clock()
    e = _endpoint(clock)
    e.breaker.on_failure()
    clock.now += 5.0
    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await asyncio.sleep(10)

    proxy = _proxy(ScriptedTransport(slow, 200))
    done: list[Attempt] = []
    task = asyncio.create_task(
        proxy.forward(
            [e], "/v1/completions", b"{}", {}, stream=False, attempt=_attempt(), on_done=done.append
        )
    )
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _idle(e)
    assert [a.status for a in done] == [499]
    # the engine is fine: the next request is let through as the trial and closes the breaker
    response = await proxy.forward(
        [e], "/v1/completions", b"{}", {}, stream=False, attempt=_attempt(), on_done=done.append
    )
    assert response.status_code == 200
    assert e.breaker.state == "closed"


async def test_all_endpoints_refusing_connections_is_503_without_addresses() -> None:
    clock = Clock()
    endpoints = [_endpoint(clock, 1), _endpoint(clock, 2)]
    with pytest.raises(NoEndpoint) as info:
        await _proxy(
            ScriptedTransport(httpx.ConnectError("refused"), httpx.ConnectError("refused")), 1
        ).forward(
            endpoints, "/v1/completions", b"{}", {}, stream=False, attempt=_attempt(), on_done=lambda a: None
        )
    assert "127.0.0.1" not in info.value.message
    assert all(_idle(e) for e in endpoints)


class DripStream(httpx.AsyncByteStream):
    """An engine that answers at once and then sends its body a byte at a time, slowly."""

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        for _ in range(100):
            await asyncio.sleep(0.05)
            yield b"x"


class DripTransport(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=DripStream())


async def test_a_non_streaming_response_must_complete_within_the_first_byte_timeout() -> None:
    e = _endpoint(Clock())
    proxy = Proxy(
        HttpxUpstream(DripTransport(), connect_timeout=1),
        GatewayMetrics(EndpointPool()),
        max_retries=0,
        budget=RetryBudget(1.0, 100.0),
        first_byte_timeout=0.3,  # each read is quick; the whole body would take 5 s
        stream_idle_timeout=5,
        retry_after=1,
    )
    done: list[Attempt] = []
    started = asyncio.get_running_loop().time()
    with pytest.raises(UpstreamError, match="TimeoutError"):
        await proxy.forward(
            [e], "/v1/completions", b"{}", {}, stream=False, attempt=_attempt(), on_done=done.append
        )
    assert asyncio.get_running_loop().time() - started < 2
    assert done[0].reason == "timeout"
    assert _idle(e)


async def test_a_refill_serves_from_a_fresh_endpoint_when_every_try_failed_to_connect() -> None:
    clock = Clock()
    dead, fresh = _endpoint(clock, 1), _endpoint(clock, 2)
    asked: list[set[str]] = []

    async def refill(tried: set[str]) -> list[Endpoint]:
        asked.append(tried)
        return [fresh]

    done: list[Attempt] = []
    response = await _proxy(ScriptedTransport(httpx.ConnectError("refused"), 200)).forward(
        [dead],
        "/v1/completions",
        b"{}",
        {},
        stream=False,
        attempt=_attempt(),
        on_done=done.append,
        refill=refill,
    )
    assert response.status_code == 200
    assert asked == [{dead.key}]
    assert [a.status for a in done] == [200]  # one request, reported once
    assert _idle(dead)
    assert _idle(fresh)


async def test_a_refill_that_gives_up_ends_the_request_once() -> None:
    e = _endpoint(Clock())

    async def refill(tried: set[str]) -> list[Endpoint]:
        raise NoEndpoint("none became ready")

    done: list[Attempt] = []
    with pytest.raises(NoEndpoint, match="none became ready"):
        await _proxy(ScriptedTransport(httpx.ConnectError("refused"))).forward(
            [e],
            "/v1/completions",
            b"{}",
            {},
            stream=False,
            attempt=_attempt(),
            on_done=done.append,
            refill=refill,
        )
    assert [a.status for a in done] == [503]
    assert _idle(e)


async def test_a_broken_response_is_not_refilled() -> None:
    e = _endpoint(Clock())

    async def refill(tried: set[str]) -> list[Endpoint]:  # pragma: no cover - must not be called
        raise AssertionError("a 5xx is not a connect failure")

    with pytest.raises(UpstreamError):
        await _proxy(ScriptedTransport(500)).forward(
            [e],
            "/v1/completions",
            b"{}",
            {},
            stream=False,
            attempt=_attempt(),
            on_done=lambda a: None,
            refill=refill,
        )
