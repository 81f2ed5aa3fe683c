"""A real model tokenizer and chat template on both sides: `flotilla sim --tokenizer DIR` engines behind a
gateway with the same `--tokenizer DIR`, driven by the official openai client.

The exactness test is the acceptance check of precise prefix routing: every block the gateway hashes for a
chat request must be a block an engine reported in its KV events. The Llama-3 layout the gateway hard-coded
before (kept below as ``legacy_ids``) is measured against the same events and misses blocks.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from flotilla.hf_tokenizer import HFTokenizer
from flotilla.labels import HEADER_ENDPOINT
from flotilla.tokenizer import load_tokenizer
from gateway.parsing import parse
from kvcache import block_hashes
from tests.fleet import SimFleet, sim_fleet
from tests.integration.gateway_harness import RunningGateway, running_gateway

MODEL = "tok-model"
BLOCK = 16
pytestmark = pytest.mark.slow

_WORDS = ["the", "system", "prompt", "cache", "kazu", "question", "answer", "Hello", "123", ",", ".", "?", "héllo",
          "日本", "'ll", "\n"]  # fmt: skip


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def conversations(seed: int) -> list[list[dict[str, Any]]]:
    """Chats as clients send them: a shared long system prompt, multi-turn, whitespace at the edges (Llama-3's
    template trims it), content parts, and one prompt longer than the gateway's prefix cap."""
    rng = random.Random(seed)
    system = text(rng, 400)
    chats: list[list[dict[str, Any]]] = []
    for i in range(6):
        turns: list[dict[str, Any]] = [{"role": "system", "content": f"  {system}\n"}]
        for _ in range(i % 3):
            turns += [
                {"role": "user", "content": text(rng, 60)},
                {"role": "assistant", "content": text(rng, 40)},
            ]
        turns.append({"role": "user", "content": f"\n{text(rng, 80)}  "})
        chats.append(turns)
    chats.append(
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": text(rng, 50)}, {"type": "text", "text": "x"}],
            }
        ]
    )
    chats.append([{"role": "user", "content": text(rng, 12_000)}])  # > 512 blocks: the bounded encode
    return chats


def legacy_ids(tok: HFTokenizer, messages: list[dict[str, Any]]) -> list[int]:
    """The chat layout the gateway hard-coded before issue 12: Llama-3 headers around each content encoded on
    its own, special tokens looked up by their Llama-3 names (Llama-3's ids when absent)."""

    def special(name: str, default: int) -> int:
        found = tok._tok.token_to_id(name)
        return default if found is None else int(found)

    bos, sh, eh, eot = (special(n, d) for n, d in (("<|begin_of_text|>", 128000), ("<|start_header_id|>", 128006),
                                                    ("<|end_header_id|>", 128007), ("<|eot_id|>", 128009)))  # fmt: skip
    ids = [bos]
    for m in messages:
        content = m["content"] if isinstance(m["content"], str) else "".join(p["text"] for p in m["content"])
        ids += [sh, *tok.encode(m["role"]), eh, *tok.encode("\n\n"), *tok.encode(content), eot]
    return [*ids, sh, *tok.encode("assistant"), eh, *tok.encode("\n\n")]


@pytest.fixture(scope="module", params=["llama3", "chatml"])
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def model_dir(family: str, request: pytest.FixtureRequest) -> Path:
    return Path(request.getfixturevalue(f"{family}_dir"))


@pytest.fixture(scope="module")
def fleet(model_dir: Path) -> Iterator[SimFleet]:
    args = ["--preset", "zero", "--served-model-name", MODEL, "--tokenizer", str(model_dir)]
    with sim_fleet(2, extra_args=args, kv_events=True) as f:
        yield f


@pytest.fixture(scope="module")
def gw(fleet: SimFleet, model_dir: Path) -> Iterator[RunningGateway]:
    with running_gateway(
        engines=fleet.urls,
        kv_events=fleet.kv_event_endpoints,
        prefix_mode="precise",
        tokenizer=str(model_dir),
    ) as g:
        g.wait_healthy(2)
        g.wait_until(lambda x: len(x.subscriber.endpoints()) == 2, what="subscribed to 2 engines")
        for url in fleet.urls:
            hear_from(g, url)
        yield g


def hear_from(g: RunningGateway, url: str) -> None:
    """ZMQ's slow joiner: send prompts straight to an engine until the gateway's index has their blocks."""
    tok = g.gateway.tokenizer
    endpoint = url.removeprefix("http://")
    for i in range(100):
        prompt = f"poke {i} " + "the system kazu question " * 20
        r = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 1})
        assert r.status_code == 200
        hashes = block_hashes(tok.encode_prompt(prompt), block_size=BLOCK, scope=MODEL)
        try:
            g.wait_until(lambda _, h=hashes: mismatches(g, [(h, endpoint)]) == 0, timeout=0.5)
            return
        except TimeoutError:
            continue
    raise AssertionError(f"no KV events from {url}")


def gateway_hashes(g: RunningGateway, messages: list[dict[str, Any]], **extra: Any) -> list[int]:
    """The blocks the gateway hashes for this chat, through its own request parser."""
    s = g.gateway.settings
    limit = s.max_prefix_blocks * s.block_size
    raw = json.dumps({"model": MODEL, "messages": messages, **extra}).encode()
    parsed = parse(raw, "chat", g.gateway.tokenizer, limit)
    return block_hashes(parsed.prompt_ids[:limit], block_size=s.block_size, seed=s.hash_seed, scope=MODEL)


def mismatches(g: RunningGateway, served: list[tuple[list[int], str]]) -> int:
    """Blocks hashed for a request that its engine's KV events did not report."""
    index = g.gateway.precise_index
    assert index is not None

    async def count() -> int:
        missing = 0
        for hashes, endpoint in served:
            missing += len(hashes) - (await index.match(hashes, [endpoint]))[endpoint]
        return missing

    assert g.loop is not None
    return asyncio.run_coroutine_threadsafe(count(), g.loop).result(10)


def test_every_block_the_gateway_hashes_is_one_the_engine_reported(
    gw: RunningGateway, fleet: SimFleet
) -> None:
    tok = gw.gateway.tokenizer
    assert isinstance(tok, HFTokenizer)
    served: list[tuple[list[int], str]] = []
    legacy: list[tuple[list[int], str]] = []
    with openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0, timeout=60) as client:
        for messages in conversations(12):
            raw = client.chat.completions.with_raw_response.create(
                model=MODEL, messages=messages, max_tokens=1
            )
            endpoint = raw.headers[HEADER_ENDPOINT]
            served.append((gateway_hashes(gw, messages), endpoint))
            old = legacy_ids(tok, messages)[: gw.gateway.settings.max_prefix_blocks * BLOCK]
            legacy.append((block_hashes(old, block_size=BLOCK, scope=MODEL), endpoint))
            usage = raw.parse().usage
            assert usage is not None
            if len(served[-1][0]) < gw.gateway.settings.max_prefix_blocks:  # the gateway encoded it all
                assert usage.prompt_tokens == len(tok.encode_chat(messages))
        # the last message left open (vLLM's continue_final_message), in a request of its own
        opened = [*conversations(13)[1], {"role": "assistant", "content": text(random.Random(1), 90)}]
        extra = {"continue_final_message": True, "add_generation_prompt": False}
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=opened, max_tokens=1, extra_body=extra
        )
        served.append((gateway_hashes(gw, opened, **extra), raw.headers[HEADER_ENDPOINT]))
    blocks = sum(len(h) for h, _ in served)
    assert blocks > 900
    assert max(len(h) for h, _ in served) == gw.gateway.settings.max_prefix_blocks  # the long one was capped
    gw.wait_until(lambda _: mismatches(gw, served) == 0, timeout=15, what="every hashed block reported")
    assert mismatches(gw, served) == 0
    # the hard-coded layout of before, against the very same events: a third or more of its blocks were never stored
    missed = mismatches(gw, legacy)
    print(f"legacy layout: {missed} of {sum(len(h) for h, _ in legacy)} blocks never reported")
    assert missed > sum(len(h) for h, _ in legacy) // 3
    # and the engine's own /tokenize agrees id for id with the gateway
    for messages in conversations(12)[:3]:
        r = httpx.post(fleet.urls[0] + "/tokenize", json={"model": MODEL, "messages": messages})
        assert r.json()["tokens"] == tok.encode_chat(messages)


def test_openai_client_chat_stream_and_completions(gw: RunningGateway, model_dir: Path) -> None:
    tok = load_tokenizer(str(model_dir))
    rng = random.Random(3)
    messages = [{"role": "system", "content": text(rng, 300)}, {"role": "user", "content": text(rng, 20)}]
    expected = len(tok.encode_chat(messages))
    with openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0, timeout=60) as client:
        first = client.chat.completions.with_raw_response.create(model=MODEL, messages=messages, max_tokens=4)
        chat = first.parse()
        assert chat.usage is not None
        assert chat.usage.prompt_tokens == expected
        assert chat.choices[0].finish_reason in ("stop", "length")
        # the same prefix again: routed to the engine that cached it, which reports the hit
        again = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[*messages[:1], {"role": "user", "content": "other"}], max_tokens=4
        )
        assert again.headers[HEADER_ENDPOINT] == first.headers[HEADER_ENDPOINT]
        details = again.parse().usage.prompt_tokens_details  # type: ignore[union-attr]
        assert details is not None
        assert details.cached_tokens is not None
        assert details.cached_tokens >= (expected // BLOCK - 2) * BLOCK - 64
        chunks = list(
            client.chat.completions.create(
                model=MODEL,
                messages=messages,
                max_tokens=5,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.prompt_tokens == expected
        assert any(c.choices and c.choices[0].finish_reason for c in chunks)
        prompt = text(rng, 200)
        completion = client.completions.create(model=MODEL, prompt=prompt, max_tokens=3)
        assert completion.usage is not None
        assert completion.usage.prompt_tokens == len(tok.encode_prompt(prompt))


def test_a_chat_the_gateway_cannot_render_is_tokenised_by_the_engine(
    fleet: SimFleet, model_dir: Path, family: str, tmp_path: Path
) -> None:
    bare = tmp_path / "no-template"
    bare.mkdir()
    shutil.copy(model_dir / "tokenizer.json", bare / "tokenizer.json")  # no chat template here
    tok = load_tokenizer(str(model_dir))
    rng = random.Random(4)
    messages = [{"role": "user", "content": text(rng, 400)}]
    with (
        running_gateway(
            engines=fleet.urls, kv_events=fleet.kv_event_endpoints, prefix_mode="precise", tokenizer=str(bare)
        ) as g,
        openai.OpenAI(base_url=g.base_url, api_key="x", max_retries=0, timeout=60) as client,
    ):
        g.wait_healthy(2)
        g.wait_until(lambda x: len(x.subscriber.endpoints()) == 2, what="subscribed")
        hear_from(g, fleet.urls[1])
        # warmed behind the gateway's back, on engine 1: only KV events + the engine's /tokenize can find it
        warm = fleet.urls[1].removeprefix("http://")
        r = httpx.post(
            fleet.urls[1] + "/v1/chat/completions",
            json={"model": MODEL, "messages": messages, "max_tokens": 1},
        )
        assert r.status_code == 200
        hashes = block_hashes(tok.encode_chat(messages), block_size=BLOCK, scope=MODEL)
        g.wait_until(lambda _: mismatches(g, [(hashes, warm)]) == 0, what="the warm blocks reported")
        before = g.gateway._match_sum
        raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=messages, max_tokens=1)
        assert raw.headers[HEADER_ENDPOINT] == warm
        assert g.gateway._match_sum - before > 0.9
        if family == "chatml":  # the template refuses: the engine's 400 reaches the client
            with pytest.raises(openai.BadRequestError, match="must not start with an assistant"):
                client.chat.completions.create(model=MODEL, messages=[{"role": "assistant", "content": "x"}])
