"""Build small but real model tokenizer directories locally: a trained byte-level BPE ``tokenizer.json`` with a
``tokenizer_config.json`` and the model family's chat template, laid out as a model repository is.

Tests and benchmarks need the files a real vLLM pod reads (``tokenizer.json``, ``tokenizer_config.json``,
``chat_template.jinja``) without downloading anything from a hub. The two families cover the two common
layouts: **Llama-3** (BOS added by the post-processor, header tokens, ``| trim`` on contents; template inside
``tokenizer_config.json``) and **ChatML** (Qwen-style: no BOS, ``<|im_start|>``/``<|im_end|>``, tools rendered
with ``tojson``, ``raise_exception`` on a bad first role; template in ``chat_template.jinja``). The pre-tokenizer
is Llama-3's split pattern, so pieces and merges behave as in the real models, on a vocabulary of a few
thousand tokens trained in well under a second from a fixed synthetic corpus.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from pathlib import Path

#: Llama-3's pre-tokenizer split pattern (tokenizer.json of Meta-Llama-3-8B)
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

#: Meta-Llama-3-8B-Instruct's chat template
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

#: a ChatML template in Qwen2's shape, with a tools section and a template-side error
CHATML_TEMPLATE = """{%- if messages[0]['role'] == 'assistant' %}
    {{- raise_exception('Conversation must not start with an assistant message') }}
{%- endif %}
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}
    {{- '# Tools\\n<tools>' }}
    {%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}
    {{- '\\n</tools><|im_end|>\\n' }}
{%- elif messages[0]['role'] != 'system' %}
    {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if not (tools and loop.first and message['role'] == 'system') %}
        {{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]
CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one had by "
    "word but not what all were we when your can said there use an each which she do how their if will up "
    "other about out many then them these so some her would make like him into time has look two more write "
    "go see number no way could people my than first water been call who oil its now find long down day did "
    "get come made may part system user assistant prompt cache token block route engine model request answer "
    "question document summary context brief helpful kazu bemo tiraso"
)


def _corpus(seed: int, lines: int) -> Iterator[str]:
    rng = random.Random(seed)
    vocabulary = _WORDS.split()
    punct = [".", ",", "?", "!", ":", ";", "\n", "\n\n", " 123", " 42", " (x)", ' "q"', "'s"]
    for _ in range(lines):
        words = [rng.choice(vocabulary) for _ in range(rng.randint(4, 24))]
        if rng.random() < 0.5:
            words[0] = words[0].capitalize()
        text = " ".join(words) + rng.choice(punct)
        yield text + (" " * rng.randint(0, 3) if rng.random() < 0.2 else "")


def train_bpe(
    specials: list[str], *, vocab_size: int = 4000, seed: int = 0, bos: str | None = None,
    corpus: Iterable[str] | None = None,
) -> str:  # fmt: skip
    """A byte-level BPE in Llama-3's shape trained on a fixed synthetic corpus; returns its JSON text.

    ``bos`` (when set) is prepended by the post-processor, as Llama-3's ``TemplateProcessing`` does. ``corpus``
    replaces the synthetic one: a tokenizer trained on the text a load generator will send counts that text's
    words as whole tokens, as a real model's tokenizer does for English (bench/crosscheck_guidellm.py).
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[AddedToken(s, special=True, normalized=False) for s in specials],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed, 4000) if corpus is None else corpus, trainer=trainer)
    if bos is not None:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    return str(tok.to_str())


def _added(specials: list[str]) -> dict[str, object]:
    return {
        str(i): {"content": s, "special": True, "lstrip": False, "rstrip": False, "normalized": False}
        for i, s in enumerate(specials)
    }


def write_llama3(
    directory: Path, *, seed: int = 0, corpus: Iterable[str] | None = None, vocab_size: int = 4000
) -> Path:
    """A Llama-3-style model directory (template inside tokenizer_config.json); returns ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    bpe = train_bpe(LLAMA3_SPECIALS, seed=seed, bos="<|begin_of_text|>", corpus=corpus, vocab_size=vocab_size)
    (directory / "tokenizer.json").write_text(bpe)
    config = {
        "added_tokens_decoder": _added(LLAMA3_SPECIALS),
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|eot_id|>",
        "chat_template": LLAMA3_TEMPLATE,
        "model_max_length": 131072,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return directory


def write_chatml(directory: Path, *, seed: int = 1) -> Path:
    """A ChatML (Qwen-style) model directory (template in chat_template.jinja, no BOS); returns ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.json").write_text(train_bpe(CHATML_SPECIALS, seed=seed))
    config = {
        "added_tokens_decoder": _added(CHATML_SPECIALS),
        "bos_token": None,
        "eos_token": {"content": "<|im_end|>", "special": True},
        "pad_token": "<|endoftext|>",
        "model_max_length": 32768,
        "tokenizer_class": "Qwen2Tokenizer",
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (directory / "chat_template.jinja").write_text(CHATML_TEMPLATE)
    return directory


FAMILIES = {"llama3": write_llama3, "chatml": write_chatml}
