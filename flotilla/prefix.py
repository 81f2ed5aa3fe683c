"""Token ids routing can use, computed cheaply and exactly: a bounded encode of a long prompt's head, and a
cache of token ids bounded by bytes.

Prefix routing needs only the first ``max_prefix_blocks`` × ``block_size`` ids of a prompt, and tokenising a
megabyte costs 80 ms (Flotilla's synthetic tokenizer) to over a second (a byte-level BPE). Both tokenizers
(:mod:`flotilla.tokenizer`, :mod:`flotilla.hf_tokenizer`) encode a character-bounded head instead, keeping only
the ids a longer text is sure to share, and cache them by the head so a document many requests share is
tokenised once.
"""

from __future__ import annotations

import sys
from array import array
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple


class PromptTokens(NamedTuple):
    """The leading ids of a prompt, as routing needs them (``prompt_prefix`` / ``chat_prefix``)."""

    #: leading ids, exactly those of the full encode; all of them when ``complete``
    ids: list[int]
    #: how many ids the whole prompt has: exact when ``complete``, else estimated from the encoded share
    total: int
    complete: bool


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


#: the first character bound tried per wanted token (doubled until enough ids are exact)
HEAD_CHARS_PER_TOKEN = 6


def bounded_prefix(
    text: str, limit: int, head_ids: Callable[[str], tuple[list[int], int]], cache: EncodeCache
) -> PromptTokens | None:
    """At least ``limit`` exact leading ids of a long ``text`` from an encode of a character-bounded head.

    ``head_ids(head)`` returns the ids of ``head`` that any text starting with ``head`` also starts with, and
    how many characters they cover. The bound starts at ``limit`` × :data:`HEAD_CHARS_PER_TOKEN` characters
    and doubles until enough ids are known. Results are cached by the head itself (the covered count stored
    after the ids), so a long document or system prompt that many requests share is tokenised once. The
    total is estimated from the ids per covered character. None when the bound reaches the text's length:
    encode it whole.
    """
    chars = limit * HEAD_CHARS_PER_TOKEN
    while chars < len(text):
        head = text[:chars]
        cached = cache.get(head)
        if cached is None:
            ids, covered = head_ids(head)
            if len(ids) >= limit:
                cache.put(head, [*ids, covered])
        else:
            ids, covered = cached[:-1], cached[-1]
        if len(ids) >= limit:
            return PromptTokens(ids, round(len(ids) * len(text) / max(covered, 1)), False)
        chars *= 2
    return None
