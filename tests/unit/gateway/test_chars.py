"""Character-block prefix hashes (gateway/chars.py) and the chars parse path: what routing hashes, how it
chains, that it is the same in every process, and that bad input gets the very errors the token path gives."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from flotilla.tokenizer import FlotillaTokenizer
from gateway.chars import char_block_hashes, chat_text, content_text
from gateway.cli import gateway as gateway_command
from gateway.errors import BadRequest
from gateway.parsing import parse, parse_chars
from gateway.prompts import Prompts
from gateway.settings import GatewaySettings

TEXT = "The quick brown fox jumps over the lazy dog. " * 40  # 1,800 characters


def body(**fields: object) -> bytes:
    return json.dumps({"model": "m", **fields}).encode()


def test_blocks_are_chained_full_and_scoped() -> None:
    hashes = char_block_hashes(TEXT, block_chars=64, scope="m")
    assert len(hashes) == len(TEXT) // 64 == 28
    assert len(set(hashes)) == len(hashes)
    assert all(0 <= h < 2**64 for h in hashes)
    # a change in block 5 changes block 5 and every later hash, none before
    changed = TEXT[: 5 * 64 + 3] + "X" + TEXT[5 * 64 + 4 :]
    other = char_block_hashes(changed, block_chars=64, scope="m")
    assert other[:5] == hashes[:5]
    assert all(a != b for a, b in zip(other[5:], hashes[5:], strict=True))
    # a longer text shares the whole chain; another model or seed shares nothing
    assert char_block_hashes(TEXT + "more" * 100, block_chars=64, scope="m")[:28] == hashes
    assert not set(char_block_hashes(TEXT, block_chars=64, scope="other")) & set(hashes)
    assert not set(char_block_hashes(TEXT, block_chars=64, scope="m", seed=1)) & set(hashes)
    assert char_block_hashes("short", block_chars=64, scope="m") == []
    with pytest.raises(ValueError, match="block_chars"):
        char_block_hashes(TEXT, block_chars=0)


def test_non_ascii_text_is_cut_by_characters_and_shares_an_ascii_prefix() -> None:
    ascii_head = "a" * 128
    mixed = ascii_head + "é" * 64 + "日本" * 32
    hashes = char_block_hashes(mixed, block_chars=64)
    assert len(hashes) == 4  # 256 characters, not bytes
    # the ASCII fast path and the per-block path give the same hashes for the same leading blocks
    assert hashes[:2] == char_block_hashes(ascii_head, block_chars=64)


_CHILD = (
    "import json, sys; from gateway.chars import char_block_hashes as h; "
    "print(json.dumps(h(sys.argv[1], block_chars=64, seed=7, scope='llama')))"
)


def test_hashes_are_the_same_in_another_process() -> None:
    """Replicas share the index through Redis: no per-process salt (Python's hash()) may reach a hash."""
    text = TEXT + "ünïcode " * 20
    here = char_block_hashes(text, block_chars=64, seed=7, scope="llama")
    for salt in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": salt}
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, text], env=env, check=True, capture_output=True, text=True
        )
        assert json.loads(out.stdout) == here


def test_chat_text_renders_roles_and_text_parts_only() -> None:
    parts = [{"type": "text", "text": "look "}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "here"}]  # fmt: skip
    assert content_text(parts) == "look here"
    assert content_text(None) == ""
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": parts}]
    text, chars = chat_text(messages, 1 << 20)
    assert text == "system\x00be brief\x1euser\x00look here\x1e"
    assert chars == len("be brief") + len("look here")
    # an earlier turn renders the same whatever follows it: a conversation's prefix stays a prefix
    longer, _ = chat_text([*messages, {"role": "assistant", "content": "ok"}], 1 << 20)
    assert longer.startswith(text)
    head, chars_all = chat_text([{"role": "user", "content": "x" * 1000}] * 5, 100)
    assert len(head) == 100
    assert chars_all == 5000


def test_parse_chars_estimates_tokens_and_keeps_id_prompts() -> None:
    chat = parse_chars(body(messages=[{"role": "user", "content": "a" * 400}]), "chat", 10_000, 4)
    assert chat.estimated
    assert chat.prompt_ids == []
    assert chat.prompt_tokens == chat.first_tokens == 100 + 5 + 5
    assert chat.text == "user\x00" + "a" * 400 + "\x1e"
    capped = parse_chars(body(prompt="b" * 5000), "completions", 1024, 4)
    assert capped.text == "b" * 1024
    assert capped.prompt_tokens == 1250
    ids = parse_chars(body(prompt=[[1, 2, 3], [4, 5]]), "completions", 1024, 4)
    assert ids.text is None
    assert ids.prompt_ids == [1, 2, 3]
    assert (ids.prompt_tokens, ids.first_tokens, ids.estimated) == (5, 3, False)
    emb = parse_chars(body(input=["abcd" * 10, "x"]), "embeddings", 1024, 4)
    assert (emb.prompt_tokens, emb.first_tokens, emb.max_tokens, emb.stream) == (11, 10, 0, False)
    # the synthetic tokenizer's count of a long English-like chat is near the estimate
    tok = FlotillaTokenizer()
    messages = [{"role": "system", "content": TEXT}, {"role": "user", "content": "summarise it"}]
    exact = parse(body(messages=messages), "chat", tok).prompt_tokens
    estimate = parse_chars(body(messages=messages), "chat", 1 << 20, 4).prompt_tokens
    assert 0.75 < estimate / exact < 1.33


BAD = [
    (b"", "chat"),
    (b"{nope", "chat"),
    (b"[]", "chat"),
    (body(messages=[{"role": "user", "content": "x"}], model=None), "chat"),
    (json.dumps({"model": 3, "messages": []}).encode(), "chat"),
    (body(messages=[{"role": "user", "content": "x"}], stream="yes"), "chat"),
    (body(messages=[{"role": "user", "content": "x"}], max_tokens=-1), "chat"),
    (body(messages=[{"role": "user", "content": "x"}], max_tokens=True), "chat"),
    (body(messages=[{"role": "user", "content": "x"}], max_completion_tokens=1 << 40), "chat"),
    (body(messages=[]), "chat"),
    (body(messages="hi"), "chat"),
    (body(messages=[{"content": "x"}]), "chat"),
    (body(messages=["x"]), "chat"),
    (body(messages=[{"role": "user", "content": 5}]), "chat"),
    (body(prompt=[1, "a"]), "completions"),
    (body(prompt=[]), "completions"),
    (body(prompt=None), "completions"),
    (body(prompt=[[1], []]), "completions"),
    (body(prompt=[-1]), "completions"),
    (body(input={}), "embeddings"),
]


@pytest.mark.parametrize(("raw", "kind"), BAD)
def test_bad_input_gets_the_token_paths_error(raw: bytes, kind: str) -> None:
    with pytest.raises(BadRequest) as tokens:
        parse(raw, kind, FlotillaTokenizer())
    with pytest.raises(BadRequest) as chars:
        parse_chars(raw, kind, 1024, 4)
    assert (chars.value.message, chars.value.param) == (tokens.value.message, tokens.value.param)


def test_prefix_hash_defaults_by_mode_and_precise_refuses_chars() -> None:
    assert GatewaySettings().prefix_hash == "chars"
    assert GatewaySettings(prefix_mode="precise").prefix_hash == "tokens"
    assert GatewaySettings(prefix_hash="tokens").prefix_hash == "tokens"
    with pytest.raises(ValueError, match="precise mode needs prefix_hash 'tokens'"):
        GatewaySettings(prefix_mode="precise", prefix_hash="chars")
    result = CliRunner().invoke(
        gateway_command,
        ["--engine", "http://127.0.0.1:9", "--prefix-mode", "precise", "--prefix-hash", "chars"],
    )
    assert result.exit_code == 2
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: settings: prefix_hash 'chars' cannot be used with prefix_mode 'precise'")


def test_a_large_body_on_the_worker_thread_gets_the_same_hashes() -> None:
    raw = body(messages=[{"role": "system", "content": TEXT * 30}, {"role": "user", "content": "go"}])
    inline = Prompts(GatewaySettings(tokenize_thread_bytes=1 << 30))
    threaded = Prompts(GatewaySettings(tokenize_thread_bytes=0))
    try:
        a = asyncio.run(inline.parse(raw, "chat"))
        b = asyncio.run(threaded.parse(raw, "chat"))
    finally:
        inline.close()
        threaded.close()
    assert a.hashes == b.hashes
    assert a.hashes is not None
    assert len(a.hashes) == 512  # capped at max_prefix_blocks: 54,000 characters, 512 blocks of 64
    assert a.hashes == char_block_hashes(
        chat_text([{"role": "system", "content": TEXT * 30}, {"role": "user", "content": "go"}], 512 * 64)[0],
        block_chars=64,
        scope="m",
    )
