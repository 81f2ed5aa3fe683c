"""Precise mode against engine_sim's real KV events: real `flotilla sim` processes, ZMQ, HTTP."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import httpx
import pytest

from kvcache import KVEventSubscriber, MemoryIndex, RedisIndex, block_hashes
from kvcache.protocol import PrefixIndex
from tests.fleet import SimFleet, sim_fleet
from tests.support import free_port

MODEL = "sim-model"
BLOCKS = 48  # tiny KV cache per engine, so other prompts evict ours quickly
pytestmark = pytest.mark.slow


def endpoint(url: str) -> str:
    return urlsplit(url).netloc  # the gateway's endpoint key: host:port of the engine's HTTP address


def tokens(seed: int, n: int = 16 * 6 + 5) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(1000, 100_000) for _ in range(n)]


async def complete(client: httpx.AsyncClient, url: str, prompt: list[int]) -> None:
    r = await client.post(f"{url}/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 1})
    r.raise_for_status()


async def eventually(check: Callable[[], object], within: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():  # type: ignore[misc]
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


@pytest.fixture(params=["map", "array"])
def fleet(request: pytest.FixtureRequest) -> SimFleet:
    args = ["--preset", "zero", "--served-model-name", MODEL, "--num-gpu-blocks", str(BLOCKS),
            "--kv-events-format", request.param]  # fmt: skip
    with sim_fleet(2, extra_args=args, kv_events=True) as f:
        yield f  # type: ignore[misc]


async def subscribed(
    index: PrefixIndex, fleet: SimFleet, client: httpx.AsyncClient
) -> AsyncIterator[KVEventSubscriber]:
    sub = KVEventSubscriber(index, block_size=16)
    for url, zmq_url in zip(fleet.urls, fleet.kv_event_endpoints, strict=True):
        await sub.add_endpoint(endpoint(url), zmq_url, MODEL)
    sub.start()
    # ZMQ slow joiner: poke each engine with a throwaway prompt until its events arrive
    pokes = iter(range(10_000, 20_000))
    for url in fleet.urls:
        before = sub.stats.batches

        async def seen(url: str = url, before: int = before) -> bool:
            await complete(
                client, url, tokens(next(pokes), 40)
            )  # a new prompt: a cache hit publishes nothing
            return sub.stats.batches > before

        await eventually(seen)
    return sub


async def run_served_then_evicted(index: PrefixIndex, fleet: SimFleet) -> KVEventSubscriber:
    one, two = (endpoint(u) for u in fleet.urls)
    async with httpx.AsyncClient(timeout=10) as client:
        sub = await subscribed(index, fleet, client)
        try:
            prompt = tokens(1)
            full = len(prompt) // 16
            hashes = block_hashes(prompt, scope=MODEL)
            await complete(client, fleet.urls[0], prompt)

            async def cached_on_one() -> bool:
                return await index.match(hashes, [one, two]) == {one: full, two: 0}

            await eventually(cached_on_one)

            # other prompts fill engine 0's 48 blocks: ours are evicted (BlockRemoved) and disappear
            for seed in range(2, 12):
                await complete(client, fleet.urls[0], tokens(seed))

            async def evicted() -> bool:
                return (await index.match(hashes, [one]))[one] < full

            await eventually(evicted)
            # the latest prompt is there (its events may still be in flight), on engine 0 only
            last = block_hashes(tokens(11), scope=MODEL)

            async def latest_cached() -> bool:
                return await index.match(last, [one, two]) == {one: len(last), two: 0}

            await eventually(latest_cached)
            assert sub.stats.gaps == 0
            assert sub.stats.unknown_parents == 0
            assert sub.stats.blocks_removed > 0
        except BaseException:
            await sub.close()
            raise
    return sub


async def test_index_follows_the_engines_cache(fleet: SimFleet) -> None:
    sub = await run_served_then_evicted(MemoryIndex(), fleet)
    await sub.close()


async def test_precise_mode_through_redis(fleet: SimFleet, redis_url: str) -> None:
    index = RedisIndex(redis_url)
    assert await index.start()
    try:
        sub = await run_served_then_evicted(index, fleet)
        await sub.close()
    finally:
        await index.close()


async def test_reset_prefix_cache_and_engine_restart(fleet: SimFleet) -> None:
    index = MemoryIndex()
    one = endpoint(fleet.urls[0])
    async with httpx.AsyncClient(timeout=10) as client:
        sub = await subscribed(index, fleet, client)
        try:
            prompt = tokens(1)
            hashes = block_hashes(prompt, scope=MODEL)
            await complete(client, fleet.urls[0], prompt)

            async def cached() -> bool:
                return (await index.match(hashes, [one]))[one] == len(hashes)

            await eventually(cached)
            (await client.post(f"{fleet.urls[0]}/reset_prefix_cache")).raise_for_status()

            async def cleared() -> bool:
                return index.blocks(one) == 0 and sub.stats.clears >= 1

            await eventually(cleared)

            await complete(client, fleet.urls[0], prompt)
            await eventually(cached)
            fleet.restart(0)  # cold engine: its seq starts again at 0

            async def relearnt() -> bool:
                await complete(client, fleet.urls[0], tokens(random.randrange(10**9), 40))
                return sub.stats.restarts >= 1 and (await index.match(hashes, [one]))[one] == 0

            await eventually(relearnt, within=30)
        finally:
            await sub.close()


async def test_replay_bootstraps_blocks_cached_before_subscribing() -> None:
    replay_port = free_port()
    args = ["--preset", "zero", "--served-model-name", MODEL, "--kv-events-replay-port", str(replay_port)]
    with sim_fleet(1, extra_args=args, kv_events=True) as fleet:
        one = endpoint(fleet.urls[0])
        prompt = tokens(5)
        async with httpx.AsyncClient(timeout=10) as client:
            await complete(client, fleet.urls[0], prompt)  # served before anyone listens
        index = MemoryIndex()
        sub = KVEventSubscriber(index)
        replay_url = f"tcp://127.0.0.1:{replay_port}"
        await sub.add_endpoint(one, fleet.kv_event_endpoints[0], MODEL, replay_url=replay_url)
        sub.start()
        try:
            hashes = block_hashes(prompt, scope=MODEL)

            async def learnt() -> bool:
                return await index.match(hashes, [one]) == {one: len(hashes)}

            await eventually(learnt)
            assert sub.stats.replays == 1
            assert sub.stats.resyncs == 0
        finally:
            await sub.close()
