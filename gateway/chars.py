"""Approximate prefix routing without a tokenizer: chained hashes over character blocks of the prompt's text.

In approximate mode the prefix index is fed by the gateway's own routing decisions, so its block hashes only
have to agree with *themselves*, never with the engine's (the SGLang router keys its radix tree by characters;
AIBrix's prefix-cache router has a "character" tokenizer). Tokenising a 2k-token prompt was a fifth of the
gateway's CPU per request; cutting its text into blocks is a few microseconds.

* **Canonical text.** A chat renders as ``role ␀ text ␞`` per message (``text``: a string content, or the
  text parts of a list of parts), so a conversation's earlier turns render the same in every later request; a
  completion is its prompt string. Only the first ``max_chars`` characters are rendered.
* **Blocks.** ``block_chars`` = block_size × chars_per_token characters (≈ one engine block), only full ones.
* **Hashes.** ``h_0 = xxh3_64("chars:" ‖ scope, seed)``; ``h_i = xxh3_64(utf8(block_i), seed=h_{i-1})``: 64-bit,
  scoped by model, each depends on every block before it, and stable across processes and machines (no
  Python ``hash()``), so replicas can share the index through Redis. xxh3 is chosen by a microbenchmark
  (docs/benchmarks.md: it beat blake2b and zlib.crc32 pairs by 4–7×). The ``"chars:"`` tag keeps these hashes
  apart from token-block hashes of the same scope in a shared index.
* **Token counts** become estimates: ⌈characters ÷ chars_per_token⌉, plus a chat template's few tokens per
  message (the TPM limiter reconciles its charge from the engine's ``usage``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import xxhash

_xxh3 = xxhash.xxh3_64_intdigest

#: separators of the canonical chat text: between a role and its text, and after each message
_ROLE_END = "\x00"
_MESSAGE_END = "\x1e"


def content_text(content: Any) -> str:
    """A chat message's text: a string, or the ``text`` of its list of parts (images and audio add none)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"] for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str)
        )
    return ""


def chat_text(messages: list[dict[str, Any]], max_chars: int) -> tuple[str, int]:
    """The canonical text of ``messages``, cut at ``max_chars``, and how many characters their contents have."""
    parts: list[str] = []
    head = content = 0
    for message in messages:
        text = content_text(message.get("content"))
        content += len(text)
        if head < max_chars:
            parts.append(f"{message['role']}{_ROLE_END}{text}{_MESSAGE_END}")
            head += len(parts[-1])
    text = "".join(parts)
    return (text[:max_chars] if head > max_chars else text), content


def root(scope: str, seed: int) -> int:
    """The chain's virtual parent for ``scope``."""
    return _xxh3(b"chars:" + scope.encode(), seed)


def char_block_hashes(text: str, *, block_chars: int, seed: int = 0, scope: str = "") -> list[int]:
    """Chained hashes of the full ``block_chars``-character blocks of ``text`` (cut it to the cap first)."""
    if block_chars <= 0:
        raise ValueError("block_chars must be positive")
    full = len(text) // block_chars
    parent = root(scope, seed)
    out: list[int] = []
    if text.isascii():  # one encode, then byte slices: the same bytes as encoding each block
        data = text.encode()
        for start in range(0, full * block_chars, block_chars):
            parent = _xxh3(data[start : start + block_chars], parent)
            out.append(parent)
        return out
    for start in range(0, full * block_chars, block_chars):
        parent = _xxh3(text[start : start + block_chars].encode("utf-8", "surrogatepass"), parent)
        out.append(parent)
    return out


def estimate_tokens(chars: int, chars_per_token: int) -> int:
    """⌈chars ÷ chars_per_token⌉: the token count a prompt of ``chars`` characters is charged and routed as."""
    return -(-chars // chars_per_token)


#: what a chat template adds around the contents, in tokens: per message (Llama-3: start header, role, end
#: header, blank line, end of turn; ChatML: im_start, role, newline, im_end, newline) and once (the
#: beginning of text and the assistant's header the generation prompt opens)
CHAT_TOKENS_PER_MESSAGE = 5
CHAT_TOKENS_PER_CHAT = 5


def estimate_chat_tokens(content_chars: int, messages: int, chars_per_token: int) -> int:
    """A chat's prompt tokens: its contents' estimate plus the template's tokens around them."""
    return (
        estimate_tokens(content_chars, chars_per_token)
        + CHAT_TOKENS_PER_MESSAGE * messages
        + CHAT_TOKENS_PER_CHAT
    )
