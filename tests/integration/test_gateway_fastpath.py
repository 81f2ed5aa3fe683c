"""The fast path (raw ASGI, before FastAPI) and FastAPI's declared routes answer alike.

The proxied routes exist twice: ``FastPath`` serves them on every request, and the FastAPI routes document
them and serve them if the fast path is off (``app.fast_path = None``). Both are driven here against a real
engine through a real gateway: the same status, body shape and headers for a completion, a stream, a rate
limit (Retry-After, x-ratelimit-*) and an error; and with the fast path, repeated request headers resolve as
Starlette's did (the first wins).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.fleet import SimFleet, sim_fleet
from tests.integration.gateway_harness import RunningGateway, fresh_rate_window, running_gateway

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    with sim_fleet(1, extra_args=["--time-scale", "0.02"]) as f:
        yield f


@pytest.fixture(params=["fast-path", "fastapi-routes"])
def gw(fleet: SimFleet, request: pytest.FixtureRequest) -> Iterator[RunningGateway]:
    with running_gateway(engines=fleet.urls, rpm_limit=3) as g:
        g.wait_healthy(1)
        if request.param == "fastapi-routes":
            g.app.fast_path = None
        yield g


def _post(gw: RunningGateway, body: object, **headers: str) -> httpx.Response:
    return httpx.post(gw.base_url + "/chat/completions", json=body, headers=headers, timeout=30)


def test_completion_stream_error_and_rate_limit_look_the_same(gw: RunningGateway) -> None:
    fresh_rate_window()  # the 429 below needs all four requests in one wall-clock minute
    ok = _post(gw, CHAT, **{"x-request-id": "req-1"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["choices"][0]["message"]["content"]
    assert ok.headers["x-request-id"] == "req-1"
    assert ok.headers["content-type"] == "application/json"
    assert int(ok.headers["content-length"]) == len(ok.content)
    assert ok.headers["x-ratelimit-limit-requests"] == "3"
    assert ok.headers.get_list("x-request-id") == ["req-1"]

    with httpx.stream(
        "POST", gw.base_url + "/chat/completions", json={**CHAT, "stream": True}, timeout=30
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["x-request-id"]
        body = b"".join(stream.iter_raw())
    assert body.rstrip().endswith(b"data: [DONE]")

    missing = _post(gw, {**CHAT, "model": "no-such-model"}, **{"x-request-id": "req-2"})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
    assert missing.headers["x-request-id"] == "req-2"

    limited = _post(gw, CHAT)
    assert limited.status_code == 429
    assert limited.json()["error"]["type"] == "rate_limit_exceeded"
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"


def test_the_first_of_repeated_headers_wins(gw: RunningGateway) -> None:
    r = httpx.post(
        gw.base_url + "/chat/completions",
        json=CHAT,
        headers=[("x-request-id", "first"), ("x-request-id", "second")],
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == "first"


def test_the_httpx_transport_serves_the_same_way(fleet: SimFleet) -> None:
    """``transport="httpx"`` (HttpxUpstream over httpx's own pool) behind the same proxy, on a real socket."""
    with running_gateway(engines=fleet.urls, transport="httpx") as g:
        g.wait_healthy(1)
        ok = _post(g, CHAT, **{"x-request-id": "req-h"})
        assert ok.status_code == 200, ok.text
        assert ok.headers.get_list("x-request-id") == ["req-h"]
        assert ok.json()["usage"]["completion_tokens"] == 4
        with httpx.stream(
            "POST", g.base_url + "/chat/completions", json={**CHAT, "stream": True}, timeout=30
        ) as stream:
            assert stream.status_code == 200
            body = b"".join(stream.iter_raw())
        assert body.rstrip().endswith(b"data: [DONE]")
        g.wait_until(lambda gw: gw.requests == 2, timeout=5, what="both requests counted")
