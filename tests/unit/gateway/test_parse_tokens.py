"""What the gateway tokenises per request: only the blocks routing can use, exactly; and what it does with a
chat it cannot render."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from flotilla.tokenizer import FlotillaTokenizer, load_tokenizer, synthetic_ids, synthetic_text
from gateway.parsing import chat_options, parse


def body(**fields: object) -> bytes:
    return json.dumps({"model": "m", **fields}).encode()


def test_a_long_prompt_is_tokenised_only_as_far_as_routing_needs() -> None:
    tok = FlotillaTokenizer()
    document = synthetic_text(synthetic_ids(1, 40_000))
    messages = [{"role": "system", "content": document}, {"role": "user", "content": "ba be"}]
    full = tok.encode_chat(messages)
    parsed = parse(body(messages=messages), "chat", tok, limit=1024)
    assert 1024 <= len(parsed.prompt_ids) < 2048
    assert parsed.prompt_ids == full[: len(parsed.prompt_ids)]
    assert 0.9 * len(full) < parsed.prompt_tokens < 1.1 * len(full)  # counted by estimate beyond the head
    assert parsed.first_tokens == parsed.prompt_tokens
    completion = parse(body(prompt=[document, "ba"]), "completions", tok, limit=512)
    assert completion.prompt_ids == tok.encode_prompt(document)[: len(completion.prompt_ids)]
    assert len(completion.prompt_ids) <= 512
    assert completion.first_tokens > 30_000
    assert completion.prompt_tokens == completion.first_tokens + 2


def test_template_options_are_the_requests(llama3_dir: Path) -> None:
    opts = chat_options(
        {"add_generation_prompt": False, "tools": [{"type": "function"}], "chat_template_kwargs": {"x": 1}}
    )
    assert opts == {
        "add_generation_prompt": False,
        "continue_final_message": False,
        "tools": [{"type": "function"}],
        "template_kwargs": {"x": 1},
    }
    assert chat_options({"add_generation_prompt": "no", "tools": [], "continue_final_message": True}) == {
        "add_generation_prompt": True, "continue_final_message": True, "tools": None, "template_kwargs": None,
    }  # fmt: skip
    tok = load_tokenizer(str(llama3_dir))
    messages = [{"role": "user", "content": "Hello"}]
    parsed = parse(body(messages=messages, add_generation_prompt=False), "chat", tok)
    assert parsed.prompt_ids == tok.encode_chat(messages, add_generation_prompt=False)
    assert not parsed.engine_tokenize


def test_a_chat_without_a_template_here_is_left_to_the_engine(llama3_dir: Path, tmp_path: Path) -> None:
    shutil.copy(llama3_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    tok = load_tokenizer(str(tmp_path))
    raw = body(messages=[{"role": "user", "content": "Hello " * 100}])
    parsed = parse(raw, "chat", tok)
    assert parsed.engine_tokenize
    assert parsed.prompt_ids == []
    assert parsed.prompt_tokens == len(raw) // 4
    # completions need no template
    assert parse(body(prompt="Hello"), "completions", tok).prompt_ids == tok.encode_prompt("Hello")
