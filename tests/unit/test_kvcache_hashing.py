"""Pinned test vectors (docs/kvcache.md) and chain continuation for the router-side block hashes."""

from __future__ import annotations

import struct

import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from kvcache import BlockHasher, block_hashes, root_hash

VECTORS = [
    pytest.param([1, 2, 3, 4], 4, 0, "", [3438538450373610552], id="dynamo-style-1234-bs4"),
    pytest.param(list(range(32)), 16, 0, "", [8262681802858393986, 16373749517349227953], id="range32"),
    pytest.param(
        list(range(32)), 16, 0, "llama", [6629126810870512896, 15648144793503971280], id="range32-scope"
    ),
    pytest.param(
        list(range(32)), 16, 1337, "llama", [12614626492775794114, 3771150061681513051], id="range32-seed"
    ),
    pytest.param(list(range(15)), 16, 0, "", [], id="partial-block-not-hashed"),
]


@pytest.mark.parametrize(("tokens", "block_size", "seed", "scope", "expected"), VECTORS)
def test_vectors(tokens: list[int], block_size: int, seed: int, scope: str, expected: list[int]) -> None:
    assert block_hashes(tokens, block_size=block_size, seed=seed, scope=scope) == expected


@pytest.mark.parametrize(("tokens", "block_size", "seed", "scope", "expected"), VECTORS)
def test_vectors_follow_the_documented_formula(
    tokens: list[int], block_size: int, seed: int, scope: str, expected: list[int]
) -> None:
    parent = xxhash.xxh3_64_intdigest(scope.encode(), seed)
    out = []
    for i in range(len(tokens) // block_size):
        block = tokens[i * block_size : (i + 1) * block_size]
        data = struct.pack("<Q", parent) + struct.pack(f"<{block_size}I", *block)
        parent = xxhash.xxh3_64_intdigest(data, seed)
        out.append(parent)
    assert out == expected
    assert root_hash(seed=seed, scope=scope) == xxhash.xxh3_64_intdigest(scope.encode(), seed)


@given(
    tokens=st.lists(st.integers(0, 2**32 - 1), max_size=80),
    cut=st.integers(0, 5),
    scope=st.sampled_from(["", "base", "adapter"]),
)
def test_parent_continues_the_chain(tokens: list[int], cut: int, scope: str) -> None:
    full = block_hashes(tokens, block_size=8, scope=scope)
    cut = min(cut, len(full))
    parent = full[cut - 1] if cut else None
    rest = block_hashes(tokens[cut * 8 :], block_size=8, scope=scope, parent=parent)
    assert full[cut:] == rest


def test_hasher_binds_block_size_and_seed() -> None:
    hasher = BlockHasher(block_size=4, seed=7)
    assert hasher.hashes([1, 2, 3, 4, 5], "m") == block_hashes([1, 2, 3, 4], block_size=4, seed=7, scope="m")
    with pytest.raises(ValueError, match="positive"):
        BlockHasher(block_size=0)


@pytest.mark.parametrize("tokens", [[-1] * 16, [2**32] * 16], ids=["negative", "too-large"])
def test_out_of_range_token_ids_are_rejected(tokens: list[int]) -> None:
    with pytest.raises(ValueError, match="token ids"):
        block_hashes(tokens)
