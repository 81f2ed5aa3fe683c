"""Approximate prefix routing by characters (``prefix_hash="chars"``, the approximate-mode default), end to end:
real engine_sim processes, a real gateway, the official openai client."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest

from flotilla.tokenizer import synthetic_ids, synthetic_text
from gateway.parsing import parse_chars
from tests.fleet import SimFleet, sim_fleet
from tests.integration.gateway_harness import running_gateway

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    with sim_fleet(3, extra_args=["--time-scale", "0.02"]) as f:
        yield f


def _served_by(client: openai.OpenAI, messages: list[dict[str, str]]) -> tuple[str, int]:
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=messages, max_tokens=4)  # type: ignore[arg-type]
    completion = raw.parse()
    assert completion.usage is not None
    return raw.headers["x-flotilla-endpoint"], completion.usage.prompt_tokens


def test_a_repeated_long_prefix_sticks_to_one_engine_and_unrelated_prompts_spread(fleet: SimFleet) -> None:
    documents = [synthetic_text(synthetic_ids(seed, 600)) for seed in range(8)]
    with running_gateway(engines=fleet.urls) as gw:
        gw.wait_healthy(3)
        assert gw.gateway.settings.prefix_hash == "chars"
        assert gw.gateway.prompts.chars
        homes: dict[int, set[str]] = {}
        with openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=0) as client:
            for turn in range(4):
                for i, document in enumerate(documents):
                    messages = [
                        {"role": "system", "content": document},
                        {"role": "user", "content": f"question {turn} about document {i}"},
                    ]
                    endpoint, engine_prompt_tokens = _served_by(client, messages)
                    homes.setdefault(i, set()).add(endpoint)
                    # the gateway's estimate (chars ÷ 4 + the template's tokens) is near the engine's count;
                    # the synthetic words average ~5 characters per token, so it runs ~23 % high here
                    body = json.dumps({"model": MODEL, "messages": messages}).encode()
                    estimate = parse_chars(body, "chat", 1 << 20, 4).prompt_tokens
                    assert 600 < engine_prompt_tokens < 700
                    assert 1.0 < estimate / engine_prompt_tokens < 1.33, (estimate, engine_prompt_tokens)
        # every document's four requests went where its first one did
        assert all(len(engines) == 1 for engines in homes.values()), homes
        # eight unrelated documents did not all pile onto one engine (a tie on an idle fleet is broken at random)
        assert len({next(iter(e)) for e in homes.values()}) >= 2, homes
        stats = gw.gateway.stats()
        assert stats.routed_match_ratio is not None
        assert stats.routed_match_ratio > 0.5


def test_token_id_prompts_keep_id_blocks(fleet: SimFleet) -> None:
    ids = synthetic_ids(99, 400)
    with (
        running_gateway(engines=fleet.urls) as gw,
        openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=0) as client,
    ):
        gw.wait_healthy(3)
        served = set()
        for n in range(4):
            raw = client.completions.with_raw_response.create(model=MODEL, prompt=[*ids, n + 1], max_tokens=2)
            usage = raw.parse().usage
            assert usage is not None
            assert usage.prompt_tokens == 401
            served.add(raw.headers["x-flotilla-endpoint"])
        assert len(served) == 1
        # the ids were hashed as ids: 401 ids = 25 full 16-token blocks, all matched after the first request
        assert gw.gateway.stats().routed_match_ratio == pytest.approx(0.75, abs=0.01)
