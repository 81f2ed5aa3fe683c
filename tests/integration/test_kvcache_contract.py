"""The PrefixIndex contract, run against every backend (in process and a real redis-server)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvcache import MemoryIndex, PrefixIndex, RedisIndex, block_hashes

A, B, C = "10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"
PROMPT = block_hashes(list(range(16 * 8)), scope="m")  # 8 blocks


async def _open(kind: str, request: pytest.FixtureRequest) -> PrefixIndex:
    if kind == "memory":
        return MemoryIndex()
    url = request.getfixturevalue("redis_url")  # a missing redis-server is an error here, never a skip
    index = RedisIndex(url, namespace=f"t-{uuid.uuid4().hex}:")
    assert await index.start(), "redis-server from the fixture did not answer"
    return index


@pytest.fixture(params=["memory", "redis"])
async def index(request: pytest.FixtureRequest) -> AsyncIterator[PrefixIndex]:
    idx = await _open(request.param, request)
    yield idx
    await idx.close()


async def settle(index: PrefixIndex) -> None:
    """Backends with buffered writes expose ``flush``; the contract is about state after it."""
    flush = getattr(index, "flush", None)
    if flush is not None:
        await flush()


async def test_empty_index_matches_nothing(index: PrefixIndex) -> None:
    assert await index.match(PROMPT, [A, B]) == {A: 0, B: 0}


@pytest.mark.parametrize(
    ("recorded", "query", "expected"),
    [
        pytest.param(PROMPT, PROMPT, 8, id="whole-prompt"),
        pytest.param(PROMPT[:3], PROMPT, 3, id="recorded-prefix"),
        pytest.param(PROMPT, PROMPT[:5], 5, id="query-prefix"),
        pytest.param(PROMPT[1:], PROMPT, 0, id="missing-root-means-no-match"),
        pytest.param(
            block_hashes(list(range(128)), scope="other"), PROMPT, 0, id="other-scope-never-matches"
        ),
    ],
)
async def test_leading_blocks(
    index: PrefixIndex, recorded: list[int], query: list[int], expected: int
) -> None:
    await index.record(A, recorded)
    await settle(index)
    assert await index.match(query, [A, B]) == {A: expected, B: 0}


async def test_each_endpoint_gets_its_own_depth(index: PrefixIndex) -> None:
    await index.record(A, PROMPT)
    await index.record(B, PROMPT[:2])
    await index.record(C, PROMPT[:6])
    await settle(index)
    assert await index.match(PROMPT, [A, B, C]) == {A: 8, B: 2, C: 6}
    assert await index.match(PROMPT, [B]) == {B: 2}
    assert await index.match([], [A, B]) == {A: 0, B: 0}
    assert await index.match(PROMPT, []) == {}


async def test_evicting_a_middle_block_cuts_the_chain(index: PrefixIndex) -> None:
    await index.record(A, PROMPT)
    await index.record(B, PROMPT)
    await index.evict(A, [PROMPT[4]])
    await settle(index)
    assert await index.match(PROMPT, [A, B]) == {A: 4, B: 8}


async def test_remove_endpoint_forgets_only_it(index: PrefixIndex) -> None:
    await index.record(A, PROMPT)
    await index.record(B, PROMPT)
    await index.remove_endpoint(A)
    await settle(index)
    assert await index.match(PROMPT, [A, B]) == {A: 0, B: 8}
    await index.record(A, PROMPT[:1])
    await settle(index)
    assert await index.match(PROMPT, [A, B]) == {A: 1, B: 8}


async def test_record_is_idempotent_and_evict_of_unknown_is_harmless(index: PrefixIndex) -> None:
    await index.record(A, PROMPT)
    await index.record(A, PROMPT)
    await index.evict(B, PROMPT)
    await index.evict(A, [12345])
    await index.remove_endpoint(C)
    await settle(index)
    assert await index.match(PROMPT, [A, B, C]) == {A: 8, B: 0, C: 0}


async def test_redis_replicas_share_state(redis_url: str) -> None:
    namespace = f"t-{uuid.uuid4().hex}:"
    one, two = RedisIndex(redis_url, namespace=namespace), RedisIndex(redis_url, namespace=namespace)
    try:
        assert await one.start()
        assert await two.start()
        await one.record(A, PROMPT)
        await one.flush()
        assert await two.match(PROMPT, [A, B]) == {A: 8, B: 0}
        assert two.stats.matches_remote == 1
    finally:
        await one.close()
        await two.close()


# ---------------------------------------------------------------------------- property: vs brute force

POOL = [0, 1, 2**63, 2**64 - 1, 12345678901234567890, *range(1000, 1012)]
hash_lists = st.lists(st.sampled_from(POOL), max_size=8)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("record"), st.sampled_from([A, B, C]), hash_lists),
        st.tuples(st.just("evict"), st.sampled_from([A, B, C]), hash_lists),
        st.tuples(st.just("remove"), st.sampled_from([A, B, C]), st.just([])),
        st.tuples(st.just("match"), st.just(""), hash_lists),
    ),
    max_size=25,
)


def brute_match(held: dict[str, set[int]], hashes: Sequence[int], endpoints: Sequence[str]) -> dict[str, int]:
    out = {}
    for e in endpoints:
        n = 0
        while n < len(hashes) and hashes[n] in held.get(e, set()):
            n += 1
        out[e] = n
    return out


async def run_against_brute_force(index: PrefixIndex, script: list[tuple[str, str, list[int]]]) -> None:
    held: dict[str, set[int]] = {}
    try:
        for op, endpoint, hashes in script:
            if op == "record":
                await index.record(endpoint, hashes)
                held.setdefault(endpoint, set()).update(hashes)
            elif op == "evict":
                await index.evict(endpoint, hashes)
                held.setdefault(endpoint, set()).difference_update(hashes)
            elif op == "remove":
                await index.remove_endpoint(endpoint)
                held.pop(endpoint, None)
            else:
                await settle(index)
                assert await index.match(hashes, [A, B, C]) == brute_match(held, hashes, [A, B, C])
        await settle(index)
        for probe in ([h] for h in POOL):
            assert await index.match(probe, [A, B, C]) == brute_match(held, probe, [A, B, C])
    finally:
        await index.close()


@settings(max_examples=150, deadline=None)
@given(script=ops)
def test_memory_matches_brute_force(script: list[tuple[str, str, list[int]]]) -> None:
    asyncio.run(run_against_brute_force(MemoryIndex(), script))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=ops)
def test_redis_matches_brute_force(redis_url: str, script: list[tuple[str, str, list[int]]]) -> None:
    async def go() -> None:
        index = RedisIndex(redis_url, namespace=f"p-{uuid.uuid4().hex}:")
        assert await index.start()
        await run_against_brute_force(index, script)

    asyncio.run(go())
