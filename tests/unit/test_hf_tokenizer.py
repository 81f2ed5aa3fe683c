"""A model's own tokenizer: tokenizer.json through HF ``tokenizers`` and its chat template rendered as
transformers does, on tokenizer directories built locally (Llama-3 and ChatML families)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from flotilla.chat_template import ChatTemplate, ChatTemplateError, NoChatTemplate
from flotilla.hf_tokenizer import HFTokenizer
from flotilla.tokenizer import load_tokenizer

WORDS = [
    "the",
    "system",
    "kazu",
    "123",
    "question",
    "?",
    "",
    "\n\n",
    "Hello",
    "'ll",
    ",x",
    "héllo",
    "<|eot_id|>",
]


def random_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(WORDS) + rng.choice([" ", "", "  ", "\n", "\t"]) for _ in range(n))


def test_llama3_renders_and_encodes_as_vllm(llama3_dir: Path) -> None:
    tok = load_tokenizer(str(llama3_dir))
    assert isinstance(tok, HFTokenizer)
    messages = [{"role": "system", "content": "  be brief \n"}, {"role": "user", "content": "Hello"}]
    text = tok.render_chat(messages)
    assert text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nbe brief<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    ids = tok.encode_chat(messages)
    specials = {name: tok._tok.token_to_id(name) for name in ("<|begin_of_text|>", "<|eot_id|>")}
    assert ids[0] == specials["<|begin_of_text|>"]  # written by the template, one special id, no second BOS
    assert ids.count(specials["<|begin_of_text|>"]) == 1
    assert ids.count(specials["<|eot_id|>"]) == 2
    assert ids == tok.encode(text)
    assert tok.render_chat(messages, add_generation_prompt=False).endswith("Hello<|eot_id|>")
    # completions: the post-processor adds BOS unless add_special_tokens is false
    assert tok.encode_prompt("Hello")[0] == specials["<|begin_of_text|>"]
    assert tok.encode_prompt("Hello", add_special_tokens=False) == tok.encode("Hello")


def test_chatml_from_chat_template_jinja(chatml_dir: Path) -> None:
    tok = load_tokenizer(
        str(chatml_dir / "tokenizer.json")
    )  # the file itself: its directory supplies the rest
    assert isinstance(tok, HFTokenizer)
    text = tok.render_chat([{"role": "user", "content": "Hello"}])
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tok.encode_prompt("Hello") == tok.encode("Hello")  # no BOS in this family
    # tools through tojson (ensure_ascii=False, as transformers)
    tool = {"type": "function", "function": {"name": "météo", "parameters": {"type": "object"}}}
    text = tok.render_chat(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "q"}], tools=[tool]
    )
    assert '\n{"type": "function", "function": {"name": "météo"' in text
    assert text.startswith("<|im_start|>system\nS\n\n# Tools\n<tools>")
    assert text.count("<|im_start|>system") == 1
    with pytest.raises(ChatTemplateError, match="must not start with an assistant"):
        tok.encode_chat([{"role": "assistant", "content": "hi"}])


def test_content_parts_and_template_features() -> None:
    specials = {"bos_token": "<s>"}
    string = ChatTemplate("{{ bos_token }}{% for m in messages %}[{{ m['content'] }}]{% endfor %}", specials)
    parts = [
        {"type": "text", "text": "a"},
        {"type": "image_url", "image_url": {}},
        {"type": "text", "text": "b"},
    ]
    assert string.content_format == "string"
    assert (
        string.render([{"role": "user", "content": parts}, {"role": "user", "content": None}])
        == "<s>[a\nb][]"
    )
    looping = ChatTemplate(
        "{% for m in messages %}{% for p in m['content'] %}{% generation %}<{{ p.text }}>{% endgeneration %}"
        "{% if loop.index > 1 %}{% break %}{% endif %}{% endfor %}{% endfor %}"
    )
    assert looping.content_format == "openai"
    assert (
        looping.render([{"role": "user", "content": "x"}, {"role": "user", "content": parts}]) == "<x><a><b>"
    )
    calls = ChatTemplate(
        "{% for m in messages %}{% for c in m.tool_calls or [] %}{{ c.function.arguments.city }}{% endfor %}"
        "{% endfor %}{{ extra }}"
    )
    call = {
        "id": "1",
        "type": "function",
        "function": {"name": "w", "arguments": json.dumps({"city": "Oslo"})},
    }
    assert calls.render(
        [{"role": "assistant", "content": None, "tool_calls": [call]}], kwargs={"extra": "!"}
    ) == ("Oslo!")
    # the sandbox refuses what transformers' sandbox refuses
    unsafe = ChatTemplate("{{ messages.__class__.__mro__ }}")
    with pytest.raises(ChatTemplateError):
        unsafe.render([{"role": "user", "content": "x"}])
    with pytest.raises(ChatTemplateError, match="does not compile"):
        ChatTemplate("{% for %}")


def test_template_override_and_missing_template(tmp_path: Path, llama3_dir: Path) -> None:
    inline = load_tokenizer(
        str(llama3_dir), chat_template="{% for m in messages %}{{ m.content }}|{% endfor %}"
    )
    assert isinstance(inline, HFTokenizer)
    assert inline.render_chat([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]) == "a|b|"
    file = tmp_path / "t.jinja"
    file.write_text("{{ messages[0].content }}!")
    from_file = load_tokenizer(str(llama3_dir), chat_template=str(file))
    assert isinstance(from_file, HFTokenizer)
    assert from_file.render_chat([{"role": "user", "content": "a"}]) == "a!"
    with pytest.raises(FileNotFoundError, match="chat template file not found"):
        load_tokenizer(str(llama3_dir), chat_template=str(tmp_path / "absent.jinja"))
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "tokenizer.json").write_text((llama3_dir / "tokenizer.json").read_text())
    tok = load_tokenizer(str(bare))
    assert isinstance(tok, HFTokenizer)
    assert not tok.has_chat_template
    with pytest.raises(NoChatTemplate, match="no chat template"):
        tok.encode_chat([{"role": "user", "content": "a"}])
    with pytest.raises(FileNotFoundError, match="tokenizer file not found"):
        load_tokenizer(str(tmp_path / "absent.json"))
    with pytest.raises(ValueError, match="needs a model tokenizer"):
        load_tokenizer(None, chat_template="{{ x }}")


@pytest.mark.parametrize("family", ["llama3", "chatml"])
def test_bounded_prefix_is_exactly_the_full_encodes_head(family: str, request: pytest.FixtureRequest) -> None:
    tok = load_tokenizer(str(request.getfixturevalue(f"{family}_dir")))
    rng = random.Random(family)
    for _ in range(150):
        text = random_text(rng, rng.randint(0, 2500))
        limit = rng.randint(1, 700)
        special = rng.random() < 0.5
        full = tok.encode_prompt(text, add_special_tokens=special)
        head = tok.prompt_prefix(text, limit, add_special_tokens=special)
        assert head.ids == full[: len(head.ids)]
        assert len(head.ids) >= min(limit, len(full))
        assert head.complete == (head.ids == full)
        if not head.complete:
            assert 0.5 * len(full) < head.total < 2 * len(full)
    messages = [{"role": "system", "content": random_text(rng, 3000)}, {"role": "user", "content": "Hello"}]
    full = tok.encode_chat(messages)
    head = tok.chat_prefix(messages, 256)
    assert not head.complete
    assert head.ids == full[: len(head.ids)]
    assert len(head.ids) >= 256


def test_continue_final_message_leaves_the_last_message_open(llama3_dir: Path, chatml_dir: Path) -> None:
    llama = load_tokenizer(str(llama3_dir))
    assert isinstance(llama, HFTokenizer)
    messages = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "The answer is "}]
    text = llama.render_chat(messages, add_generation_prompt=False, continue_final_message=True)
    # Llama-3's template trims the content, so the cut falls after the stripped text, as in transformers
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\nThe answer is")
    chatml = load_tokenizer(str(chatml_dir))
    assert isinstance(chatml, HFTokenizer)
    text = chatml.render_chat(messages, add_generation_prompt=False, continue_final_message=True)
    assert text.endswith("<|im_start|>assistant\nThe answer is ")  # kept spacing: cut after it
    ids = chatml.encode_chat(messages, add_generation_prompt=False, continue_final_message=True)
    assert ids == chatml.encode(text)
    head = chatml.chat_prefix(messages, 4, add_generation_prompt=False, continue_final_message=True)
    assert head.ids == ids[: len(head.ids)]
    with pytest.raises(ChatTemplateError, match="cannot both be true"):
        chatml.encode_chat(messages, continue_final_message=True)
