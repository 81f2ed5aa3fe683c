"""RedisIndex under a real redis-server that dies and comes back, and its one-round-trip match."""

from __future__ import annotations

import asyncio

import redis

from kvcache import RedisIndex, block_hashes
from tests.support import RedisServer

A, B = "127.0.0.1:8001", "127.0.0.1:8002"
FIRST = block_hashes(list(range(16 * 6)), scope="m")
SECOND = block_hashes(list(range(500, 500 + 16 * 3)), scope="m")


async def wait_healthy(index: RedisIndex, within: float = 15.0) -> None:
    for _ in range(int(within / 0.05)):
        if index.healthy:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("RedisIndex did not reconnect")


async def test_redis_down_degrades_to_local_state_and_recovers(redis_private: RedisServer) -> None:
    index = RedisIndex(redis_private.url, backoff=(0.02, 0.2), timeout=0.5)
    other = RedisIndex(redis_private.url, backoff=(0.02, 0.2), timeout=0.5)  # a second gateway replica
    try:
        assert await index.start()
        await index.record(A, FIRST)
        await index.flush()
        # concurrent matches leave several pooled connections, all of which the kill will break
        many = await asyncio.gather(*(index.match(FIRST, [A, B]) for _ in range(8)))
        assert many == [{A: 6, B: 0}] * 8
        assert index.stats.matches_remote == 8

        redis_private.stop()
        # every call keeps working: answered from the local mirror, nothing raised
        assert await index.match(FIRST, [A, B]) == {A: 6, B: 0}
        assert not index.healthy
        await index.record(B, SECOND)
        await index.evict(A, FIRST[4:])
        await index.flush()
        assert await index.match(FIRST, [A, B]) == {A: 4, B: 0}
        assert await index.match(SECOND, [A, B]) == {A: 0, B: 3}
        assert await other.match(FIRST, [A]) == {A: 0}  # never connected: empty mirror, still no error
        assert index.stats.matches_local >= 3

        redis_private.start()  # an empty Redis on the same port
        await wait_healthy(index)
        await index.flush()
        # the mirror was replayed: another replica now sees what this one learnt while Redis was away
        await wait_healthy(other)
        assert await other.match(FIRST, [A, B]) == {A: 4, B: 0}
        assert await other.match(SECOND, [A, B]) == {A: 0, B: 3}
        assert other.stats.matches_remote == 2
        matches = await asyncio.gather(*(index.match(SECOND, [A, B]) for _ in range(8)))
        assert matches == [{A: 0, B: 3}] * 8
        await index.record(A, SECOND)
        await index.flush()
        assert index.healthy
        assert index.stats.failures >= 1
        assert index.stats.connects == 2  # one reconnect (and one mirror replay), not one per stale socket
    finally:
        await index.close()
        await other.close()


async def test_endpoint_removed_during_a_partition_is_removed_on_recovery(redis_private: RedisServer) -> None:
    index = RedisIndex(redis_private.url, backoff=(0.02, 0.2), timeout=0.2)
    other = RedisIndex(redis_private.url)
    admin = redis.Redis(host="127.0.0.1", port=redis_private.port)
    try:
        assert await index.start()
        assert await other.start()
        await index.record(A, FIRST)
        await index.flush()
        # Redis keeps its data but stops answering `index` for a while (CLIENT PAUSE: a stalled network)
        admin.execute_command("CLIENT", "PAUSE", 1500, "ALL")
        assert await index.match(FIRST, [A]) == {A: 6}  # timed out, answered locally
        assert not index.healthy
        await index.remove_endpoint(A)
        assert await index.match(FIRST, [A]) == {A: 0}
        await wait_healthy(index)
        await index.flush()
        assert await other.match(FIRST, [A]) == {A: 0}
        assert other.stats.matches_remote == 1
    finally:
        admin.close()
        await index.close()
        await other.close()


async def test_match_is_one_round_trip_whatever_the_prompt_length(redis_private: RedisServer) -> None:
    index = RedisIndex(redis_private.url)
    admin = redis.Redis(host="127.0.0.1", port=redis_private.port)
    try:
        assert await index.start()
        long_prompt = block_hashes(list(range(16 * 512)), scope="m")
        await index.record(A, long_prompt)
        await index.flush()

        def evalsha_calls() -> int:
            stats = admin.info("commandstats")
            return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

        for hashes in (long_prompt[:1], long_prompt[:128], long_prompt):
            calls, trips = evalsha_calls(), index.stats.round_trips
            assert await index.match(hashes, [A, B]) == {A: len(hashes), B: 0}
            assert index.stats.round_trips - trips == 1
            assert evalsha_calls() - calls == 1
    finally:
        admin.close()
        await index.close()


async def test_redis_bounds_endpoint_capacity_tail_first_and_ttl(redis_url: str) -> None:
    index = RedisIndex(redis_url, endpoint_capacity=4, ttl=1.0)
    try:
        assert await index.start()
        await index.record(A, FIRST)  # 6 blocks into 4 slots: the chain keeps its root, loses its tail
        await index.flush()
        assert await index.match(FIRST, [A]) == {A: 4}
        await index.record(A, SECOND)  # 3 newer blocks: only FIRST's first block survives
        await index.flush()
        assert await index.match(FIRST, [A]) == {A: 1}
        assert await index.match(SECOND, [A]) == {A: 3}
        assert index.stats.matches_remote == 3
        await asyncio.sleep(1.3)  # nothing recorded for longer than the TTL: the endpoint's keys expired
        assert await index.match(SECOND, [A]) == {A: 0}
        assert index.stats.matches_remote == 4
    finally:
        await index.close()


async def test_redis_lru_order_holds_within_one_write_batch(redis_url: str) -> None:
    index = RedisIndex(redis_url, endpoint_capacity=4)
    try:
        assert await index.start()
        await index.record(A, FIRST)
        await index.record(A, SECOND)  # no await point in between: both ops go in one script call
        await index.flush()
        assert index.stats.flushes == 1
        assert await index.match(FIRST, [A]) == {A: 1}
        assert await index.match(SECOND, [A]) == {A: 3}
    finally:
        await index.close()
