"""A deterministic tokenizer and Llama-3-style chat template shared by engine_sim and the gateway.

Prefix-aware routing only works if the router computes the *same token ids* as the engine (a block-size or
unit mismatch silently breaks matching: Dynamo PR #1233). Real deployments get that by loading the model's own
tokenizer; without model weights or a hub we need one that is exact, fast and needs no files, so the simulator
and the gateway both use this one (or, optionally, an HF ``tokenizer.json`` through :func:`load_tokenizer`).

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

import functools
import os
import re
import sys
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from typing import Any, Protocol

import xxhash

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

PIECE_RE = re.compile(r"""'(?:s|t|re|ve|m|ll|d)| ?[^\W\d_]+| ?\d| ?[^\s\w]+|\s+(?!\S)|\s+""")
_WORD_RE = re.compile(r"(?:[bcdfghjklmnprstvwxyz][aeiou]){1,2}")

Message = Mapping[str, Any]


class Tokenizer(Protocol):
    """What engine and gateway need from a tokenizer."""

    name: str

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def encode_prompt(self, text: str, *, add_special_tokens: bool = True) -> list[int]: ...

    def encode_chat(
        self, messages: Sequence[Message], *, add_generation_prompt: bool = True
    ) -> list[int]: ...


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


@functools.lru_cache(maxsize=65536)
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


class EncodeCache:
    """An LRU of text -> token ids bounded by *bytes*, not entries.

    Bounding by entry count (an ``lru_cache`` of 4,096) let a client that sends many distinct large prompts
    pin tens of GiB: a cached tuple of Python ints costs ~36 bytes per token. Ids are kept as ``array('I')``
    (4 bytes each) and counted with the text's own size; an entry larger than an eighth of the budget is not
    kept at all, so one huge prompt cannot flush everything else.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, array[int]] = OrderedDict()

    @staticmethod
    def cost(text: str, ids: array[int]) -> int:
        return sys.getsizeof(text) + ids.itemsize * len(ids) + 64

    def get(self, text: str) -> list[int] | None:
        ids = self._entries.get(text)
        if ids is None:
            return None
        self._entries.move_to_end(text)
        return ids.tolist()

    def put(self, text: str, ids: list[int]) -> None:
        packed = array("I", ids)
        cost = self.cost(text, packed)
        if cost > self.max_bytes // 8 or text in self._entries:
            return
        self._entries[text] = packed
        self.bytes += cost
        while self.bytes > self.max_bytes:
            old_text, old_ids = self._entries.popitem(last=False)
            self.bytes -= self.cost(old_text, old_ids)

    def __len__(self) -> int:
        return len(self._entries)


class FlotillaTokenizer:
    """The default deterministic tokenizer (see the module docstring for the scheme)."""

    name = "flotilla-syllable-v1"
    vocab_size = VOCAB_SIZE

    def __init__(self, *, content_cache_bytes: int = 64 << 20) -> None:
        # Long, repeated strings (system prompts, documents) are tokenised once per process.
        self._cache = EncodeCache(content_cache_bytes)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        if len(text) < 256:
            return list(chain.from_iterable(map(_piece_ids, PIECE_RE.findall(text))))
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        ids = list(chain.from_iterable(map(_piece_ids, PIECE_RE.findall(text))))
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

    def encode_chat(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> list[int]:
        """Llama-3 chat template: ``<|begin_of_text|>`` then, per message,
        ``<|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>``, then the assistant header."""
        ids = [BOS]
        for message in messages:
            ids.append(START_HEADER)
            ids.extend(self.encode(str(message.get("role", "user"))))
            ids.extend((END_HEADER, 10, 10))
            ids.extend(self.encode(message_text(message.get("content"))))
            ids.append(EOT)
        if add_generation_prompt:
            ids.extend((START_HEADER, *self.encode("assistant"), END_HEADER, 10, 10))
        return ids


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


class HFTokenizer:
    """An HF ``tokenizer.json`` (package ``tokenizers``, extra ``hf``) with the same Llama-3 chat layout.

    Use the same file in engine_sim and the gateway; special tokens are looked up by their Llama-3 names.
    """

    def __init__(self, path: str) -> None:
        try:
            from tokenizers import Tokenizer as _HF
        except ImportError as exc:  # pragma: no cover - depends on the optional extra
            raise RuntimeError(
                "an HF tokenizer.json needs the 'tokenizers' package: pip install 'flotilla[hf]'"
            ) from exc
        if not os.path.isfile(path):
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        self._tok = _HF.from_file(path)
        self.name = f"hf:{path}"
        specials = {}
        for token_id, text in SPECIAL_TOKENS.items():
            found = self._tok.token_to_id(text)
            specials[token_id] = found if found is not None else token_id
        self._bos, self._sh, self._eh, self._eot = (
            specials[BOS],
            specials[START_HEADER],
            specials[END_HEADER],
            specials[EOT],
        )
        self._nl = self.encode("\n\n")

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Iterable[int]) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=False))

    def encode_prompt(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        ids = self.encode(text)
        return [self._bos, *ids] if add_special_tokens else ids

    def encode_chat(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> list[int]:
        ids = [self._bos]
        for message in messages:
            ids.append(self._sh)
            ids.extend(self.encode(str(message.get("role", "user"))))
            ids.append(self._eh)
            ids.extend(self._nl)
            ids.extend(self.encode(message_text(message.get("content"))))
            ids.append(self._eot)
        if add_generation_prompt:
            ids.extend((self._sh, *self.encode("assistant"), self._eh, *self._nl))
        return ids


def load_tokenizer(spec: str | None = None) -> Tokenizer:
    """``None`` or ``"flotilla"`` → :class:`FlotillaTokenizer`; a path to ``tokenizer.json`` → :class:`HFTokenizer`."""
    if spec in (None, "", "flotilla", FlotillaTokenizer.name):
        return FlotillaTokenizer()
    assert spec is not None
    return HFTokenizer(spec)


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
