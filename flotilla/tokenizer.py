"""A deterministic tokenizer and Llama-3-style chat template shared by engine_sim and the gateway.

Prefix-aware routing only works if the router computes the *same token ids* as the engine (a block-size or
unit mismatch silently breaks matching: Dynamo PR #1233). Real deployments get that by loading the model's own
tokenizer; without model weights or a hub we need one that is exact, fast and needs no files, so the simulator
and the gateway both use this one by default (a model's own files: :mod:`flotilla.hf_tokenizer`, through
:func:`load_tokenizer`).

The scheme, GPT-2-like in shape so token counts look realistic (about one token per English word):

* Text is split into pieces by :data:`PIECE_RE` (words with their leading space, single digits, runs of
  punctuation, whitespace).
* A piece that is a *syllable word* — 1 or 2 syllables of one consonant and one vowel, optionally with a
  leading space (``" kazu"``, ``"be"``) — has an exact, reversible id. Synthetic workloads and simulated
  output use only these, so ``encode(decode(ids)) == ids`` for them.
* A single-byte piece maps to its byte value (ids 0–255).
* Any other piece hashes (xxh3-64) into the remaining id range: deterministic, not reversible.
* Special tokens have Llama-3's ids (``<|begin_of_text|>`` = 128000 …) and are never produced from text.

The chat template tokenises each message's content on its own, so the ids of a long shared system prompt are
the same in every request and can be cached per string.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from typing import Any, Protocol

import xxhash

from flotilla.prefix import HEAD_CHARS_PER_TOKEN, EncodeCache, PromptTokens, bounded_prefix

VOCAB_SIZE = 128256

BOS = 128000  # <|begin_of_text|>
EOS = 128001  # <|end_of_text|>
START_HEADER = 128006  # <|start_header_id|>
END_HEADER = 128007  # <|end_header_id|>
EOT = 128009  # <|eot_id|>
SPECIAL_TOKENS: dict[int, str] = {
    BOS: "<|begin_of_text|>",
    EOS: "<|end_of_text|>",
    START_HEADER: "<|start_header_id|>",
    END_HEADER: "<|end_header_id|>",
    EOT: "<|eot_id|>",
}

CONSONANTS = "bcdfghjklmnprstvwxyz"
VOWELS = "aeiou"
SYLLABLES = [c + v for c in CONSONANTS for v in VOWELS]  # 100
_SYLLABLE_INDEX = {s: i for i, s in enumerate(SYLLABLES)}
_N = len(SYLLABLES)
WORDS_PER_FORM = _N + _N * _N  # 1- and 2-syllable words: 10,100

SPACED_WORD_BASE = 256  # " kazu"
BARE_WORD_BASE = SPACED_WORD_BASE + WORDS_PER_FORM  # "kazu"
HASHED_BASE = BARE_WORD_BASE + WORDS_PER_FORM
HASHED_RANGE = BOS - HASHED_BASE

#: (words come first: they are most pieces, and no word starts with the contractions' apostrophe, so the order of
#: these two alternatives cannot change a match; it saves a failed alternative per word, ~10-30 % of ``findall``)
PIECE_RE = re.compile(r""" ?[^\W\d_]+|'(?:s|t|re|ve|m|ll|d)| ?\d| ?[^\s\w]+|\s+(?!\S)|\s+""")
_WORD_RE = re.compile(r"(?:[bcdfghjklmnprstvwxyz][aeiou]){1,2}")

Message = Mapping[str, Any]

#: characters per token assumed for text that was not encoded (token counts for limits and load only)
_EST_CHARS_PER_TOKEN = 4


class Tokenizer(Protocol):
    """What engine and gateway need from a tokenizer."""

    name: str

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def encode_prompt(self, text: str, *, add_special_tokens: bool = True) -> list[int]: ...

    def encode_chat(
        self,
        messages: Sequence[Message],
        *,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        tools: Sequence[Any] | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> list[int]: ...

    def prompt_prefix(self, text: str, limit: int, *, add_special_tokens: bool = True) -> PromptTokens:
        """At least ``limit`` leading ids of the prompt (all when it is shorter), with less work than a full
        encode of a long text."""
        ...

    def chat_prefix(
        self,
        messages: Sequence[Message],
        limit: int,
        *,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        tools: Sequence[Any] | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> PromptTokens: ...


def word_id(index: int, *, spaced: bool = True) -> int:
    """Id of the ``index``-th syllable word (0 ≤ index < WORDS_PER_FORM)."""
    if not 0 <= index < WORDS_PER_FORM:
        raise ValueError(f"word index {index} out of range [0, {WORDS_PER_FORM})")
    return (SPACED_WORD_BASE if spaced else BARE_WORD_BASE) + index


def _word_text(index: int) -> str:
    if index < _N:
        return SYLLABLES[index]
    index -= _N
    return SYLLABLES[index // _N] + SYLLABLES[index % _N]


def _word_index(word: str) -> int:
    if len(word) == 2:
        return _SYLLABLE_INDEX[word]
    return _N + _SYLLABLE_INDEX[word[:2]] * _N + _SYLLABLE_INDEX[word[2:]]


#: pieces memoised per tokenizer (each at most MEMO_PIECE_CHARS long, so the memo is bounded in bytes too)
MEMO_PIECES = 65536
MEMO_PIECE_CHARS = 32


def _piece_ids(piece: str) -> tuple[int, ...]:
    spaced = piece.startswith(" ")
    body = piece[1:] if spaced else piece
    if _WORD_RE.fullmatch(body):
        return ((SPACED_WORD_BASE if spaced else BARE_WORD_BASE) + _word_index(body),)
    raw = piece.encode()
    if len(raw) == 1 or (piece.isspace() and piece.isascii()):
        return tuple(raw)  # bytes, and whitespace runs byte by byte, so newlines round-trip
    return (HASHED_BASE + xxhash.xxh3_64_intdigest(raw) % HASHED_RANGE,)


def _id_text(token: int) -> str:
    if SPACED_WORD_BASE <= token < BARE_WORD_BASE:
        return " " + _word_text(token - SPACED_WORD_BASE)
    if BARE_WORD_BASE <= token < HASHED_BASE:
        return _word_text(token - BARE_WORD_BASE)
    if HASHED_BASE <= token < BOS:
        # not reversible: render a stable placeholder word outside the syllable vocabulary
        return f" w{token - HASHED_BASE}"
    if token in SPECIAL_TOKENS:
        return SPECIAL_TOKENS[token]
    if 0 <= token < VOCAB_SIZE:
        return ""  # reserved ids render as nothing, as unused special tokens do
    raise ValueError(f"token id {token} outside the vocabulary [0, {VOCAB_SIZE})")


class FlotillaTokenizer:
    """The default deterministic tokenizer (see the module docstring for the scheme)."""

    name = "flotilla-syllable-v1"
    vocab_size = VOCAB_SIZE

    def __init__(self, *, content_cache_bytes: int = 64 << 20) -> None:
        # Long, repeated strings (system prompts, documents) are tokenised once per process.
        self._cache = EncodeCache(content_cache_bytes)
        self._memo: dict[str, tuple[int, ...]] = {}
        #: the memo's single-id pieces as ints (the fast path of :meth:`_ids`)
        self._single: dict[str, int] = {}
        #: exact leading ids of long texts, by their character-bounded head (see bounded_prefix)
        self._heads = EncodeCache(content_cache_bytes // 4)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        if len(text) < 256:
            return self._ids(PIECE_RE.findall(text))
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        ids = self._ids(PIECE_RE.findall(text))
        self._cache.put(text, ids)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; byte ids are joined and decoded as UTF-8 (invalid sequences replaced)."""
        out: list[str] = []
        pending = bytearray()
        for token in ids:
            if 0 <= token < 256:
                pending.append(token)
                continue
            if pending:
                out.append(pending.decode(errors="replace"))
                pending.clear()
            out.append(_id_text(token))
        if pending:
            out.append(pending.decode(errors="replace"))
        return "".join(out)

    def encode_prompt(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """A completion prompt as vLLM tokenises it: ``<|begin_of_text|>`` + text."""
        ids = self.encode(text)
        return [BOS, *ids] if add_special_tokens else ids

    def encode_chat(
        self,
        messages: Sequence[Message],
        *,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        tools: Sequence[Any] | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> list[int]:
        """Llama-3 chat template: ``<|begin_of_text|>`` then, per message,
        ``<|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>``, then the assistant header.
        ``continue_final_message`` leaves the last message open (no ``<|eot_id|>``, no assistant header).
        (``tools`` and ``template_kwargs`` are accepted as vLLM does and not rendered.)"""
        ids = [BOS]
        for i, message in enumerate(messages):
            ids.extend(self._header(message))
            ids.extend(self.encode(message_text(message.get("content"))))
            if not (continue_final_message and i == len(messages) - 1):
                ids.append(EOT)
        if add_generation_prompt and not continue_final_message:
            ids.extend(self._header({"role": "assistant"}))
        return ids

    def _header(self, message: Message) -> list[int]:
        return [START_HEADER, *self.encode(str(message.get("role", "user"))), END_HEADER, 10, 10]

    def prompt_prefix(self, text: str, limit: int, *, add_special_tokens: bool = True) -> PromptTokens:
        """A character-bounded head is split into pieces and its last two pieces dropped (the only ones the
        cut can change: the pattern looks one character ahead), so the ids kept are exactly the full text's."""
        head = [BOS] if add_special_tokens else []
        found = bounded_prefix(text, max(limit - len(head), 1), self._pieces_head, self._heads)
        if found is not None:
            return PromptTokens(head + found.ids, len(head) + found.total, False)
        ids = head + self.encode(text)
        return PromptTokens(ids, len(ids), True)

    def _pieces_head(self, head: str) -> tuple[list[int], int]:
        pieces = PIECE_RE.findall(head)[:-2]
        return self._ids(pieces), sum(map(len, pieces))

    def _ids(self, pieces: list[str]) -> list[int]:
        """Ids of pieces through the memo: the hot loop of the synthetic tokenizer.

        Almost every piece is one id (a word, a character): when all pieces are memoised single ids, one
        ``map`` over the memo of single ids is the whole answer, at C speed (about a tenth of the per-piece
        Python loop, which stays the path for pieces seen the first time and multi-id pieces)."""
        ids: list[int | None] = list(map(self._single.get, pieces))
        if None not in ids:
            return ids  # type: ignore[return-value]
        get = self._memo.get
        return list(chain.from_iterable([get(p) or self._miss(p) for p in pieces]))

    def _miss(self, piece: str) -> tuple[int, ...]:
        ids = _piece_ids(piece)
        if len(piece) <= MEMO_PIECE_CHARS:
            if len(self._memo) >= MEMO_PIECES:
                self._memo.clear()
                self._single.clear()
            self._memo[piece] = ids
            if len(ids) == 1:
                self._single[piece] = ids[0]
        return ids

    def chat_prefix(
        self,
        messages: Sequence[Message],
        limit: int,
        *,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        tools: Sequence[Any] | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> PromptTokens:
        """The ids :meth:`encode_chat` starts with, encoding contents only until ``limit`` ids are known."""
        ids = [BOS]
        estimated = 0  # ids of what was not encoded
        last = len(messages) - 1
        for i, message in enumerate(messages):
            content = message_text(message.get("content"))
            close = [] if continue_final_message and i == last else [EOT]
            if estimated or len(ids) >= limit:
                estimated += 5 + len(content) // _EST_CHARS_PER_TOKEN
                continue
            ids.extend(self._header(message))
            if len(content) < (limit - len(ids)) * HEAD_CHARS_PER_TOKEN:  # short: encoded whole, no copies
                ids.extend(self.encode(content))
                ids.extend(close)
                continue
            part = self.prompt_prefix(content, limit - len(ids), add_special_tokens=False)
            ids.extend(part.ids)
            if part.complete:
                ids.extend(close)
            else:
                estimated += part.total - len(part.ids) + 1
        if add_generation_prompt and not continue_final_message:
            if estimated or len(ids) >= limit:
                estimated += 5
            else:
                ids.extend(self._header({"role": "assistant"}))
        return PromptTokens(ids, len(ids) + estimated, not estimated)


def message_text(content: Any) -> str:
    """The text of a chat message's ``content``: a string, ``None``, or a list of OpenAI content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                parts.append(part)
        return "".join(parts)
    return str(content)


def load_tokenizer(spec: str | None = None, *, chat_template: str | None = None) -> Tokenizer:
    """``None`` or ``"flotilla"`` → :class:`FlotillaTokenizer`; a model directory (or its ``tokenizer.json``) →
    :class:`flotilla.hf_tokenizer.HFTokenizer` with the model's chat template, or ``chat_template`` (vLLM's
    ``--chat-template``: a file or the template itself) instead."""
    if spec in (None, "", "flotilla", FlotillaTokenizer.name):
        if chat_template:
            raise ValueError("a chat template needs a model tokenizer (--tokenizer DIR)")
        return FlotillaTokenizer()
    assert spec is not None
    from flotilla.hf_tokenizer import HFTokenizer

    return HFTokenizer(spec, chat_template=chat_template)


def synthetic_text(ids: Iterable[int]) -> str:
    """Text whose tokenisation is exactly ``ids`` when all ids are spaced syllable words.

    Benchmarks generate token ids, turn them into text with this, and both gateway and engine recover the ids.
    """
    return FlotillaTokenizer().decode(ids)


def synthetic_ids(seed: int, count: int) -> list[int]:
    """``count`` reproducible spaced-word ids from ``seed`` (a splitmix64 stream; no global RNG state)."""
    out = []
    state = seed & 0xFFFFFFFFFFFFFFFF
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        z ^= z >> 31
        out.append(SPACED_WORD_BASE + z % WORDS_PER_FORM)
    return out
