"""Arbitrary JSON on every POST route of a real engine: always a vLLM-shaped answer, never a 5xx."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_sim import EngineConfig, serve_engines
from tests.support import free_port

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
ROUTES = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/tokenize", "/detokenize"]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=12,
)
message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", 3]), "content": values})
fields: dict[str, Any] = {
    "model": st.sampled_from([MODEL, "other", None, 7]),
    "messages": st.lists(message, max_size=3) | values,
    "prompt": st.text(max_size=20)
    | st.lists(st.integers(-5, 200_000), max_size=5)
    | st.lists(st.lists(st.integers(-5, 200_000), max_size=3), max_size=2)
    | values,
    "max_tokens": st.integers(-3, 10**12) | values,
    "max_completion_tokens": st.integers(-3, 40),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}) | values,
    "n": st.integers(-1, 3),
    "stop": st.text(max_size=3) | st.lists(st.text(max_size=3), max_size=3) | values,
    "ignore_eos": st.booleans(),
    "echo": st.booleans(),
    "logprobs": st.booleans() | st.integers(0, 3),
    "priority": st.integers(-3, 3),
    "cache_salt": st.text(max_size=4),
    "temperature": st.floats(-1, 3, allow_nan=False),
    "input": st.text(max_size=10) | st.lists(st.integers(-(2**40), 2**40), max_size=4) | values,
    "dimensions": st.integers(-1, 20_000),
    "tokens": st.lists(st.integers(-(2**40), 2**40), max_size=4) | values,
    "add_special_tokens": st.booleans(),
}
bodies = st.fixed_dictionaries({}, optional=fields)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    port = free_port()
    ready = threading.Event()
    stop: asyncio.Event | None = None
    loop = asyncio.new_event_loop()

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        cfg = EngineConfig(preset="zero", port=port, max_model_len=4096, output_len_max=8)
        async with serve_engines([cfg]):
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(30)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("route", ROUTES)
def test_no_5xx_for_any_json(url: str, route: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:

        @given(body=bodies | values)
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(body: Any) -> None:
            r = client.post(route, json=body)
            assert r.status_code < 500, (body, r.text[:300])
            if r.status_code >= 400:
                err = r.json()["error"]
                assert err["code"] == r.status_code
                assert err["message"]

        check()
