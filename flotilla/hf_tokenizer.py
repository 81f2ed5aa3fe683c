"""A model's own tokenizer, as vLLM uses it: ``tokenizer.json`` through HF ``tokenizers`` plus its chat template.

Loaded from a local directory laid out as a model repository (a mounted volume or ConfigMap in Kubernetes):
``tokenizer.json`` (required), ``tokenizer_config.json`` (special tokens and, often, ``chat_template``) and
``chat_template.jinja``. A path to ``tokenizer.json`` itself works too (its directory supplies the rest).
Nothing is ever downloaded.

vLLM's tokenisation, which this reproduces id for id:

* completions: ``encode(prompt, add_special_tokens=True)`` — the tokenizer's post-processor adds BOS if the
  model has one;
* chat: the template rendered (:mod:`flotilla.chat_template`), then ``encode(text, add_special_tokens=False)``
  — the template writes ``bos_token`` itself, and special-token strings in the text become their ids.

Routing only needs the first blocks of a prompt, and a byte-level BPE costs about a second per MB, so
:meth:`HFTokenizer.prompt_prefix` encodes a character-bounded prefix: the ids of every pre-tokenizer piece
that ends before the cut are exactly the full text's (pieces are matched left to right with one character
of look-ahead), so the last two pieces — the ones the cut can change — are dropped and the rest kept, and so
is anything within a special token's length of the cut (half a special token is plain text, and splits the
text before it differently).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from flotilla.chat_template import ChatTemplate, NoChatTemplate, override_source, template_source
from flotilla.prefix import EncodeCache, PromptTokens, bounded_prefix

#: the special-token names transformers passes to a chat template (``special_tokens_map``)
SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


#: texts at least this long are encoded with the GIL released (a thread hand-off costs more for short ones)
_GIL_FREE_CHARS = 4096


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


class HFTokenizer:
    """``tokenizer.json`` + chat template from a model directory (see the module docstring)."""

    def __init__(
        self, path: str, *, chat_template: str | None = None, head_cache_bytes: int = 16 << 20
    ) -> None:
        try:
            from tokenizers import Tokenizer as _HF
        except ImportError as exc:  # pragma: no cover - depends on the optional extra
            raise RuntimeError(
                "a model tokenizer needs the 'tokenizers' and 'jinja2' packages: pip install 'flotilla[hf]'"
            ) from exc
        given = Path(path)
        file = given / "tokenizer.json" if given.is_dir() else given
        if not file.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {file}")
        directory = file.parent
        self._tok = _HF.from_file(str(file))
        self.name = f"hf:{directory}"
        self.vocab_size = int(self._tok.get_vocab_size(with_added_tokens=True))
        added = self._tok.get_added_tokens_decoder().values()
        self._added_len = max((len(t.content) for t in added), default=0)
        #: exact leading ids of long prompts by their character-bounded head, with and without special tokens
        self._heads = {flag: EncodeCache(head_cache_bytes) for flag in (True, False)}
        config_file = directory / "tokenizer_config.json"
        self.config: dict[str, Any] = json.loads(config_file.read_text()) if config_file.is_file() else {}
        specials: dict[str, Any] = {}
        for name in SPECIAL_NAMES:
            text = _token_text(self.config.get(name))
            if text is not None:
                specials[name] = text
        extra = self.config.get("additional_special_tokens")
        if isinstance(extra, list):
            specials["additional_special_tokens"] = [t for t in map(_token_text, extra) if t is not None]
        self.special_tokens = specials
        self._templates: dict[bool, ChatTemplate | None] = {}
        self._override = override_source(chat_template) if chat_template else None
        self._directory = directory
        # compile now: a template that cannot compile is a configuration error, reported at start-up
        self._template(tools=False)

    def _template(self, *, tools: bool) -> ChatTemplate | None:
        if tools not in self._templates:
            source = self._override or template_source(self._directory, self.config, tools=tools)
            self._templates[tools] = ChatTemplate(source, self.special_tokens) if source else None
        return self._templates[tools]

    @property
    def has_chat_template(self) -> bool:
        return self._template(tools=False) is not None

    def _encode(self, text: str, special: bool) -> Any:
        """One encode; a long text through ``encode_batch``, which releases the GIL while Rust works
        (``encode`` holds it), so an event loop beside a tokenizer thread keeps running."""
        if len(text) < _GIL_FREE_CHARS:
            return self._tok.encode(text, add_special_tokens=special)
        return self._tok.encode_batch([text], add_special_tokens=special)[0]

    # ------------------------------------------------------------------ the Tokenizer protocol
    def encode(self, text: str) -> list[int]:
        return list(self._encode(text, False).ids)

    def decode(self, ids: Iterable[int]) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=False))

    def encode_prompt(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        return list(self._encode(text, add_special_tokens).ids)

    def render_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        tools: Sequence[Any] | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> str:
        """The chat prompt text; :class:`~flotilla.chat_template.ChatTemplateError` if it cannot be rendered."""
        template = self._template(tools=bool(tools))
        if template is None:
            raise NoChatTemplate(
                "the tokenizer defines no chat template (as of transformers v4.44 there is no default one); "
                "give one with --chat-template"
            )
        return template.render(
            messages,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            tools=tools,
            kwargs=template_kwargs,
        )

    def encode_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        tools: Sequence[Any] | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> list[int]:
        text = self.render_chat(
            messages,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            tools=tools,
            template_kwargs=template_kwargs,
        )
        return self.encode(text)

    def prompt_prefix(self, text: str, limit: int, *, add_special_tokens: bool = True) -> PromptTokens:
        """At least ``limit`` leading ids of ``text`` exactly as a full encode gives them (all when shorter)."""
        found = bounded_prefix(
            text, max(limit, 1), functools.partial(self._head_ids, special=add_special_tokens),
            self._heads[add_special_tokens],
        )  # fmt: skip
        if found is not None:
            return found
        ids = self.encode_prompt(text, add_special_tokens=add_special_tokens)
        return PromptTokens(ids, len(ids), True)

    def _head_ids(self, head: str, *, special: bool) -> tuple[list[int], int]:
        """The ids of ``head`` every text starting with it shares: all but its last two pieces, and nothing
        within a special token's length of the end (half a special token is text, and splits what precedes
        it differently)."""
        enc = self._encode(head, special)
        words, offsets = enc.word_ids, enc.offsets
        safe = len(head) - self._added_len - 1
        # word ids and offsets only grow, so the cut is found walking back from the end (a few tokens)
        cut = len(words)
        last = next((w for w in reversed(words) if w is not None), None)
        if last is None:
            return [], 0
        while cut > 0:
            w, span = words[cut - 1], offsets[cut - 1]
            if not (w is None or w >= last - 1 or span[1] > safe):
                break
            cut -= 1
        return list(enc.ids[:cut]), offsets[cut - 1][1] if cut else 0

    def chat_prefix(
        self,
        messages: Sequence[Mapping[str, Any]],
        limit: int,
        *,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        tools: Sequence[Any] | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> PromptTokens:
        text = self.render_chat(
            messages,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            tools=tools,
            template_kwargs=template_kwargs,
        )
        return self.prompt_prefix(text, limit, add_special_tokens=False)
