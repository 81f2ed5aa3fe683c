"""The gateway end to end: official openai client → gateway → real ``flotilla sim`` engines over HTTP."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import openai
import pytest

from flotilla.labels import HEADER_ENDPOINT as ENDPOINT_HEADER
from flotilla.tokenizer import synthetic_ids, synthetic_text
from gateway.routing.registry import BUILTIN_PROFILES
from tests.fleet import SimFleet, sim_fleet
from tests.integration.gateway_harness import RunningGateway, running_gateway

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
SYSTEM = synthetic_text(synthetic_ids(42, 600))  # a 600-token shared system prompt (37 blocks)


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    with sim_fleet(3, extra_args=["--time-scale", "0.1"]) as f:
        yield f


@pytest.fixture(scope="module")
def gw(fleet: SimFleet) -> Iterator[RunningGateway]:
    with running_gateway(engines=fleet.urls) as g:
        g.wait_healthy(3)
        yield g


@pytest.fixture
def client(gw: RunningGateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=0, timeout=60) as c:
        yield c


def chat(client: openai.OpenAI, question: str, *, system: str = SYSTEM, max_tokens: int = 4, **kw):
    return client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        max_tokens=max_tokens,
        **kw,
    )


def test_models_list(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_chat_non_streaming(client: openai.OpenAI) -> None:
    raw = chat(client, "hello there", max_tokens=5, extra_body={"ignore_eos": True})
    resp = raw.parse()
    assert resp.object == "chat.completion"
    assert resp.usage is not None
    assert resp.usage.completion_tokens == 5
    assert raw.headers["x-request-id"]
    assert raw.headers[ENDPOINT_HEADER].startswith("127.0.0.1:")


def test_chat_streaming_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "stream please"}],
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 6
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_completions(client: openai.OpenAI, stream: bool) -> None:
    kwargs = {"model": MODEL, "prompt": "ba be bi", "max_tokens": 3, "extra_body": {"ignore_eos": True}}
    if stream:
        pieces = list(client.completions.create(stream=True, **kwargs))  # type: ignore[call-overload]
        assert pieces[-1].choices[0].finish_reason == "length"
    else:
        resp = client.completions.create(**kwargs)  # type: ignore[call-overload]
        assert resp.object == "text_completion"
        assert resp.usage.completion_tokens == 3


def test_completions_with_token_ids(client: openai.OpenAI) -> None:
    resp = client.completions.create(model=MODEL, prompt=synthetic_ids(7, 40), max_tokens=2)
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == 40


def test_shared_prefix_lands_on_the_warm_engine_and_reports_cached_tokens(client: openai.OpenAI) -> None:
    system = synthetic_text(synthetic_ids(7, 800))  # unique to this test
    first = chat(client, "first question", system=system)
    warm = first.headers[ENDPOINT_HEADER]
    for i in range(4):
        raw = chat(client, f"follow up number {i}", system=system)
        assert raw.headers[ENDPOINT_HEADER] == warm
        usage = raw.parse().usage
        assert usage is not None
        assert usage.prompt_tokens_details is not None
        assert usage.prompt_tokens_details.cached_tokens >= 800 - 16


def test_shared_system_prompt_under_load_spreads(client: openai.OpenAI, gw: RunningGateway) -> None:
    """24 concurrent requests with one shared 600-token system prompt: the default profile must use every engine
    (prefix-only routing would send all of them to the first warm engine).

    A warm engine keeps winning until it runs about ``prefill_weight × S ÷ decode_weight`` (~9 here) more
    requests than a cold one (gateway/routing/plugins/ttft_cost.py), so the third engine is needed only if the 24
    really overlap: they start together (a barrier) and each decodes 256 tokens (~0.35 s at this time scale),
    and the prompt is this test's own, so no earlier test has warmed an engine with it.
    """
    system = synthetic_text(synthetic_ids(4242, 600))
    start = threading.Barrier(24)

    def one(i: int) -> str:
        start.wait(timeout=30)
        raw = chat(client, f"question {i} " + synthetic_text(synthetic_ids(1000 + i, 20)), system=system,
                   max_tokens=256, extra_body={"ignore_eos": True})  # fmt: skip
        return raw.headers[ENDPOINT_HEADER]

    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        counts = Counter(pool.map(one, range(24)))
    assert len(counts) == 3, counts
    assert max(counts.values()) <= 16, counts
    stats = gw.gateway.stats()
    assert stats.routed_match_ratio is not None
    assert stats.routed_match_ratio > 0


def test_session_affinity_header(client: openai.OpenAI) -> None:
    seen = set()
    for i in range(5):
        raw = chat(
            client,
            f"s {i}",
            extra_headers={"x-session-id": "user-17", "x-routing-strategy": "session-affinity"},
        )
        seen.add(raw.headers[ENDPOINT_HEADER])
    assert len(seen) == 1


def test_round_robin_header_cycles(client: openai.OpenAI) -> None:
    seen = [
        chat(client, "rr", extra_headers={"x-routing-strategy": "round-robin"}).headers[ENDPOINT_HEADER]
        for _ in range(6)
    ]
    assert len(set(seen)) == 3
    assert seen[:3] == seen[3:]


def test_unknown_strategy_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="unknown routing strategy"):
        chat(client, "x", extra_headers={"x-routing-strategy": "teleport"})


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])


def test_metrics_and_stats(gw: RunningGateway, client: openai.OpenAI) -> None:
    chat(client, "count me")
    text = httpx.get(gw.url + "/metrics").text
    for family in (
        "flotilla_gateway_requests_total",
        "flotilla_gateway_ttft_seconds_bucket",
        "flotilla_gateway_e2e_seconds_bucket",
        "flotilla_gateway_routing_decision_seconds_bucket",
        "flotilla_gateway_prefix_match_ratio_bucket",
        "flotilla_gateway_endpoint_in_flight",
        "flotilla_gateway_endpoint_pending_prefill_blocks",
    ):
        assert family in text
    stats = gw.gateway.stats()
    assert stats.requests > 0
    assert len(stats.endpoints) == 3
    assert all(e.in_flight == 0 for e in stats.endpoints)
    assert all(
        e.prefilling == 0 and e.pending_blocks == 0 and e.active_blocks == 0 for e in gw.gateway.fleet.pool
    )
    assert httpx.get(gw.url + "/ready").status_code == 200


def test_stream_is_relayed_without_buffering(gw: RunningGateway) -> None:
    """The first chunk reaches the client long before the engine finishes (no store-and-forward)."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "count slowly"}],
        "max_tokens": 300,
        "ignore_eos": True,
        "stream": True,
    }
    start = time.monotonic()
    first = None
    chunks = 0
    with httpx.stream("POST", gw.base_url + "/chat/completions", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: {"):
                chunks += 1
                if first is None:
                    first = time.monotonic() - start
                    # the engine answered: its prefill no longer counts as queued work, the request still runs
                    pool = list(gw.gateway.fleet.pool)
                    assert sum(e.in_flight for e in pool) == 1
                    assert sum(e.prefilling for e in pool) == 0
                    assert sum(e.pending_blocks for e in pool) == 0
    total = time.monotonic() - start
    assert first is not None
    assert chunks > 10
    assert first < total / 3, (first, total)


@pytest.mark.parametrize("strategy", sorted(BUILTIN_PROFILES))
def test_every_strategy_serves_through_the_gateway(
    client: openai.OpenAI, fleet: SimFleet, strategy: str
) -> None:
    seen = set()
    for i in range(6):
        raw = chat(
            client, f"{strategy} {i}", extra_headers={"x-routing-strategy": strategy, "x-session-id": "s"}
        )
        assert raw.parse().choices[0].message.content is not None
        seen.add(raw.headers[ENDPOINT_HEADER])
    assert seen <= {u.removeprefix("http://") for u in fleet.urls}
