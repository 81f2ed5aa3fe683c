"""The floor contender of the overhead benchmark does the prefix work it claims (else its cost means nothing)."""

from __future__ import annotations

import orjson

from bench.passthrough_proxy import BLOCK_CHARS, MAX_BLOCKS, prefix_blocks


def _chat(model: str, content: str) -> bytes:
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": content}]})


def test_prefix_blocks_match_shared_leading_blocks_only() -> None:
    table: dict[int, int] = {}
    shared = "x" * (BLOCK_CHARS * 10)
    assert prefix_blocks(_chat("m", shared + "a" * BLOCK_CHARS * 5), table) == 0
    # same 10 leading blocks (the role line shifts them, identically), then different text
    assert prefix_blocks(_chat("m", shared + "b" * BLOCK_CHARS * 5), table) == 10
    assert prefix_blocks(_chat("other", shared), table) == 0  # hashes are scoped by model


def test_prefix_blocks_hash_at_most_the_cap() -> None:
    table: dict[int, int] = {}
    prefix_blocks(_chat("m", "y" * BLOCK_CHARS * (MAX_BLOCKS + 100)), table)
    assert len(table) == MAX_BLOCKS
