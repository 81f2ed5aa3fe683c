"""Block pool semantics (vLLM V1 block_pool.py): LRU free list, eviction, touch, usage, events."""

from __future__ import annotations

import pytest

from engine_sim.blocks import BlockPool, Cleared, Removed, Stored
from engine_sim.hashing import BlockHasher, block_digest, extra_keys_for, none_hash


def test_block_zero_is_reserved_and_usage_counts_cached_free_blocks_as_free() -> None:
    pool = BlockPool(5, 4, record_events=True)
    assert pool.usable == 4
    assert pool.num_free == 4
    got = pool.allocate(2)
    assert got == [1, 2]
    assert pool.usage() == pytest.approx(0.5)
    pool.store(got, [11, 12], None, list(range(8)), None, [None, None])
    pool.release(got)
    assert pool.usage() == 0.0  # cached but unreferenced: free
    assert pool.longest_cached_prefix([11, 12, 13]) == [1, 2]


def test_release_appends_in_reverse_and_allocation_evicts_from_head() -> None:
    pool = BlockPool(6, 4, record_events=True)
    a = pool.allocate(2)  # [1, 2]
    assert a is not None
    pool.store(a, [101, 102], None, list(range(8)), None, [None, None])
    pool.release(a)  # free order now 3, 4, 5, 2, 1 (later block first)
    pool.drain_events()
    got = pool.allocate(4)
    assert got == [3, 4, 5, 2]
    # block 2 (hash 102, the request's tail) was evicted before its prefix block 1
    assert pool.drain_events() == [Removed([102])]
    assert pool.longest_cached_prefix([101, 102]) == [1]
    assert pool.allocate(2) is None  # only block 1 left


def test_touch_removes_cached_block_from_free_list() -> None:
    pool = BlockPool(4, 4)
    a = pool.allocate(1)
    assert a == [1]
    pool.store(a, [7], None, [0, 1, 2, 3], None, [None])
    pool.release(a)
    hits = pool.longest_cached_prefix([7])
    assert pool.evictable_among(hits) == 1
    pool.touch(hits)
    assert pool.ref[1] == 1
    assert 1 not in pool.free
    assert pool.allocate(2) == [2, 3]  # block 1 is protected


def test_duplicate_content_in_two_blocks_and_reset() -> None:
    pool = BlockPool(4, 2, record_events=True)
    a, b = pool.allocate(1), pool.allocate(1)
    assert a is not None
    assert b is not None
    pool.store(a, [5], None, [1, 2], None, [None])
    pool.store(b, [5], None, [1, 2], None, [None])
    assert set(pool.cached[5]) == {1, 2}
    pool.reset_prefix_cache()
    assert pool.cached == {}
    events = pool.drain_events()
    assert isinstance(events[0], Stored)
    assert isinstance(events[-1], Cleared)


def test_events_are_not_recorded_without_a_sink() -> None:
    pool = BlockPool(4, 2)
    got = pool.allocate(1)
    assert got is not None
    pool.store(got, [1], None, [0, 0], None, [None])
    assert pool.drain_events() == []


@pytest.mark.parametrize(
    ("lora", "salt", "same_as_base"),
    [(None, None, True), ("adapter-a", None, False), (None, "salt", False)],
    ids=["base", "lora", "cache-salt"],
)
def test_engine_hashes_chain_and_include_extra_keys(
    lora: str | None, salt: str | None, same_as_base: bool
) -> None:
    tokens = list(range(40))
    base = BlockHasher(none_hash(0), 16, None, None)
    base.extend(tokens)
    h = BlockHasher(none_hash(0), 16, lora, salt)
    h.extend(tokens)
    assert len(h.hashes) == 2  # full blocks only
    assert (h.hashes == base.hashes) is same_as_base
    # cache_salt only changes the first block's keys, but the chain carries it on
    assert extra_keys_for(1, None, salt) is None


def test_engine_hash_depends_on_seed_and_parent() -> None:
    t = list(range(16))
    assert block_digest(none_hash(0), t, None) != block_digest(none_hash(1), t, None)
    a = BlockHasher(none_hash(0), 16, None, None)
    a.extend([9] * 16 + t)
    b = BlockHasher(none_hash(0), 16, None, None)
    b.extend([8] * 16 + t)
    assert a.hashes[1] != b.hashes[1]  # same block tokens, different parent
    assert all(0 <= x < 2**64 for x in a.hashes)
