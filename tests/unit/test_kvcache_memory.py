"""MemoryIndex bounds: global capacity, per-endpoint capacity and TTL, checked against a reference LRU."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcache import MemoryIndex

A, B, C = "a:1", "b:1", "c:1"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0  # every record is strictly later than the one before
        return self.now


class ReferenceLRU:
    """The specification: one LRU list of (endpoint, block) pairs, a prompt touched tail first."""

    def __init__(self, capacity: int, endpoint_capacity: int | None) -> None:
        self.capacity, self.endpoint_capacity = capacity, endpoint_capacity
        self.pairs: OrderedDict[tuple[str, int], None] = OrderedDict()

    def record(self, endpoint: str, hashes: Sequence[int]) -> None:
        for h in reversed(hashes):
            self.pairs.pop((endpoint, h), None)
            self.pairs[(endpoint, h)] = None
        if self.endpoint_capacity is not None:
            mine = [p for p in self.pairs if p[0] == endpoint]
            for p in mine[: max(0, len(mine) - self.endpoint_capacity)]:
                del self.pairs[p]
        while len(self.pairs) > self.capacity:
            self.pairs.popitem(last=False)

    def evict(self, endpoint: str, hashes: Sequence[int]) -> None:
        for h in hashes:
            self.pairs.pop((endpoint, h), None)

    def remove(self, endpoint: str) -> None:
        for p in [p for p in self.pairs if p[0] == endpoint]:
            del self.pairs[p]

    def match(self, hashes: Sequence[int], endpoints: Sequence[str]) -> dict[str, int]:
        out = {}
        for e in endpoints:
            n = 0
            while n < len(hashes) and (e, hashes[n]) in self.pairs:
                n += 1
            out[e] = n
        return out


POOL = list(range(100, 112))
prompts = st.lists(st.sampled_from(POOL), max_size=6, unique=True)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("record"), st.sampled_from([A, B, C]), prompts),
        st.tuples(st.just("evict"), st.sampled_from([A, B, C]), prompts),
        st.tuples(st.just("remove"), st.sampled_from([A, B, C]), st.just([])),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.integers(1, 12),
    endpoint_capacity=st.one_of(st.none(), st.integers(1, 6)),
    script=ops,
)
def test_bounded_index_equals_reference_lru(
    capacity: int, endpoint_capacity: int | None, script: list[tuple[str, str, list[int]]]
) -> None:
    index = MemoryIndex(capacity, endpoint_capacity=endpoint_capacity, clock=FakeClock())
    ref = ReferenceLRU(capacity, endpoint_capacity)

    async def go() -> None:
        for op, endpoint, hashes in script:
            if op == "record":
                await index.record(endpoint, hashes)
                ref.record(endpoint, hashes)
            elif op == "evict":
                await index.evict(endpoint, hashes)
                ref.evict(endpoint, hashes)
            else:
                await index.remove_endpoint(endpoint)
                ref.remove(endpoint)
            assert len(index) == len(ref.pairs) <= capacity
            for h in POOL:
                assert await index.match([h], [A, B, C]) == ref.match([h], [A, B, C])
            for e in (A, B, C):
                assert index.recency(e) == [h for (pe, h) in ref.pairs if pe == e]

    asyncio.run(go())


async def test_eviction_eats_chains_from_the_tail() -> None:
    index = MemoryIndex(capacity=6, clock=FakeClock())
    await index.record(A, [1, 2, 3, 4])
    await index.record(B, [1, 2, 3, 4])  # 8 entries > 6: A's two tail blocks go first
    assert await index.match([1, 2, 3, 4], [A, B]) == {A: 2, B: 4}
    assert len(index) == 6


async def test_ttl_expires_unrefreshed_blocks() -> None:
    now = [0.0]
    index = MemoryIndex(ttl=10.0, clock=lambda: now[0])
    await index.record(A, [1, 2])
    now[0] = 5.0
    await index.record(B, [1, 2])
    now[0] = 9.0
    await index.record(A, [1])  # refreshes block 1 on A only
    now[0] = 12.0
    assert await index.match([1, 2], [A, B]) == {A: 1, B: 2}
    now[0] = 16.0
    assert await index.match([1, 2], [A, B]) == {A: 1, B: 0}
    now[0] = 30.0
    assert await index.match([1, 2], [A, B]) == {A: 0, B: 0}
    assert len(index) == 0


async def test_removed_endpoint_bit_is_reused_without_leaking_blocks() -> None:
    index = MemoryIndex()
    for i in range(200):
        await index.record(f"pod-{i}:80", [1, 2, 3])
        await index.remove_endpoint(f"pod-{i}:80")
    await index.record(A, [1])
    assert await index.match([1, 2], [A, "pod-5:80"]) == {A: 1, "pod-5:80": 0}
    assert len(index) == 1
    assert index.endpoints() == [A]


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"capacity": 0}, id="zero-capacity"),
        pytest.param({"endpoint_capacity": 0}, id="zero-endpoint-capacity"),
        pytest.param({"ttl": -1.0}, id="negative-ttl"),
    ],
)
def test_bad_bounds_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be a positive"):
        MemoryIndex(**kwargs)  # type: ignore[arg-type]


def chains(draw_from: st.DataObject, n: int) -> list[list[int]]:
    """Prompts as the gateway records them: a few shared stems (system prompts) of 0–60 blocks, each with a
    private tail, so records re-touch the most recent blocks of earlier segments, partly or wholly."""
    stems = [list(range(1000 * s, 1000 * s + draw_from.draw(st.integers(0, 60)))) for s in range(1, 4)]
    out = []
    for i in range(n):
        stem = draw_from.draw(st.sampled_from(stems))
        cut = draw_from.draw(st.integers(0, len(stem)))
        tail = draw_from.draw(st.integers(0, 8))
        out.append(stem[:cut] + [10_000 + 100 * i + t for t in range(tail)])
    return out


@settings(max_examples=150, deadline=None)
@given(
    capacity=st.integers(20, 300),
    endpoint_capacity=st.one_of(st.none(), st.integers(10, 120)),
    data=st.data(),
)
def test_long_shared_prompts_equal_reference_lru(
    capacity: int, endpoint_capacity: int | None, data: st.DataObject
) -> None:
    """The same specification on prompts long enough for the bulk, cut-the-shared-prefix and rebuild paths."""
    index = MemoryIndex(capacity, endpoint_capacity=endpoint_capacity, clock=FakeClock())
    ref = ReferenceLRU(capacity, endpoint_capacity)
    for prompt in chains(data, 25):
        endpoint = data.draw(st.sampled_from([A, B, C]))
        if data.draw(st.integers(0, 9)) == 0:
            index.evict_now(endpoint, prompt[-3:])
            ref.evict(endpoint, prompt[-3:])
        else:
            index.record_now(endpoint, prompt)
            ref.record(endpoint, prompt)
        assert len(index) == len(ref.pairs)
        assert index.match_now(prompt, [A, B, C]) == ref.match(prompt, [A, B, C])
        for e in (A, B, C):
            assert index.recency(e) == [h for (pe, h) in ref.pairs if pe == e]


@pytest.mark.parametrize(
    "window",
    [
        pytest.param(lambda i: [*range(40), 1000 + i], id="shared-stem-private-tail"),
        pytest.param(lambda i: [*range(i % 7, 40 + i % 7), 1000 + i], id="sliding-window-middle-retouch"),
        pytest.param(lambda i: list(range(60)), id="same-prompt-again"),
    ],
)
def test_blocks_recorded_again_leave_no_unbounded_stale_entries(window: Callable[[int], list[int]]) -> None:
    """Re-recorded blocks go stale in their old segment; memory must stay a small multiple of what is held."""
    index = MemoryIndex(clock=FakeClock())
    for i in range(2000):
        index.record_now(A, window(i))
    assert index.stored() <= 4 * len(index) + 64


def test_a_per_endpoint_cap_bounds_that_endpoint_only() -> None:
    index = MemoryIndex(1_000, endpoint_capacity=50)
    index.cap_endpoint("small", 10)
    index.record_now("small", list(range(30)))
    index.record_now("default", list(range(30)))
    assert index.blocks("small") == 10
    assert index.blocks("default") == 30
    # the tail goes first, as the engine frees it: the prompt's first blocks still match
    assert index.match_now(list(range(30)), ["small"]) == {"small": 10}
    index.cap_endpoint("small", None)  # back to endpoint_capacity
    index.record_now("small", list(range(100, 140)))
    assert index.blocks("small") == 50
    with pytest.raises(ValueError, match="positive"):
        index.cap_endpoint("small", 0)


def test_removing_an_endpoint_forgets_its_cap() -> None:
    index = MemoryIndex(1_000)
    index.cap_endpoint("e", 5)
    index.remove_endpoint_now("e")
    index.record_now("e", list(range(20)))
    assert index.blocks("e") == 20
