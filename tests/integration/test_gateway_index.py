"""Prefix indexes end to end: precise mode from real KV events, and an approximate index shared through Redis."""

from __future__ import annotations

import contextlib

import httpx
import openai

from flotilla.labels import HEADER_ENDPOINT as ENDPOINT_HEADER
from flotilla.tokenizer import synthetic_ids, synthetic_text
from tests.fleet import sim_fleet
from tests.integration.gateway_harness import running_gateway
from tests.support import RedisServer

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def _ask(client: openai.OpenAI, content: str, strategy: str):
    return client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": content}],
        max_tokens=2,
        extra_headers={"x-routing-strategy": strategy},
    )


def test_precise_mode_follows_engine_kv_events() -> None:
    prompt = synthetic_text(synthetic_ids(99, 640))  # 40 blocks
    with (
        sim_fleet(3, extra_args=["--time-scale", "0.05"], kv_events=True) as fleet,
        running_gateway(engines=fleet.urls, kv_events=fleet.kv_event_endpoints, prefix_mode="precise") as gw,
        openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0, timeout=30) as client,
    ):
        gw.wait_healthy(3)
        gw.wait_until(lambda g: len(g.subscriber.endpoints()) == 3, what="subscribed to 3 engines")
        # an engine warmed *behind the gateway's back*: only its KV events can tell the gateway
        direct = httpx.post(
            fleet.urls[2] + "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": 1},
            timeout=30,
        )
        assert direct.status_code == 200
        warm = fleet.urls[2].removeprefix("http://")
        gw.wait_until(lambda g: g.subscriber.stats.batches > 0, what="KV events received")
        for strategy in ("precise-prefix", "default"):
            before = gw.gateway._match_sum
            raw = _ask(client, prompt, strategy)
            assert gw.gateway._match_sum - before > 0.9  # the index knew the blocks
            assert raw.headers[ENDPOINT_HEADER] == warm, strategy
            details = raw.parse().usage.prompt_tokens_details
            assert details is not None
            assert details.cached_tokens >= 600
        # the engine drops its cache (AllBlocksCleared): the gateway stops preferring it
        assert httpx.post(fleet.urls[2] + "/reset_prefix_cache").status_code == 200
        gw.wait_until(lambda g: g.subscriber.stats.clears > 0, what="AllBlocksCleared seen")
        before = gw.gateway._match_sum
        _ask(client, prompt, "precise-prefix")
        assert gw.gateway._match_sum == before  # this request matched 0 blocks anywhere


def test_replicas_share_the_approximate_index_through_redis(redis_private: RedisServer) -> None:
    prompt = synthetic_text(synthetic_ids(5, 640))
    settings = {"index_backend": "redis", "redis_url": redis_private.url}
    with sim_fleet(3, extra_args=["--time-scale", "0.05"]) as fleet, contextlib.ExitStack() as stack:
        a, b = (stack.enter_context(running_gateway(engines=fleet.urls, **settings)) for _ in range(2))
        a.wait_healthy(3)
        b.wait_healthy(3)
        ca = stack.enter_context(openai.OpenAI(base_url=a.base_url, api_key="x", max_retries=0, timeout=30))
        cb = stack.enter_context(openai.OpenAI(base_url=b.base_url, api_key="x", max_retries=0, timeout=30))
        warm = _ask(ca, prompt, "prefix-cache").headers[ENDPOINT_HEADER]
        # replica B never saw this prompt; it learns where it went from Redis
        for i in range(3):
            assert _ask(cb, prompt + f" {i}", "prefix-cache").headers[ENDPOINT_HEADER] == warm
        redis_private.stop()  # Redis dies: both replicas keep routing (from their local mirrors)
        for client in (ca, cb):
            for i in range(3):
                assert _ask(client, prompt + f" after {i}", "default").status_code == 200
        redis_private.start()


def test_kv_event_counters_are_exported() -> None:
    with (
        sim_fleet(1, extra_args=["--time-scale", "0.05"], kv_events=True) as fleet,
        running_gateway(engines=fleet.urls, kv_events=fleet.kv_event_endpoints, prefix_mode="precise") as gw,
    ):
        gw.wait_healthy(1)
        gw.wait_until(lambda g: len(g.subscriber.endpoints()) == 1, what="subscribed")
        httpx.post(
            gw.base_url + "/completions",
            json={"model": MODEL, "prompt": "ba " * 64, "max_tokens": 1},
            timeout=30,
        )
        gw.wait_until(lambda g: g.subscriber.stats.blocks_stored > 0, what="blocks stored")
        text = httpx.get(gw.url + "/metrics").text
        assert 'flotilla_gateway_kv_events_total{counter="blocks_stored"}' in text
