"""The subscriber over real ZMQ sockets: a PUB socket publishing vLLM's 3-frame messages on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import msgspec
import pytest
import zmq
import zmq.asyncio

from kvcache import KVEventSubscriber, MemoryIndex, block_hashes
from tests.support import free_port

MODEL = "tiny"
PROMPT = list(range(64))


class Publisher:
    """vLLM's ZmqEventPublisher framing: [topic, seq (8-byte big-endian), msgpack EventBatch]."""

    def __init__(self, ctx: zmq.asyncio.Context) -> None:
        self.port = free_port()
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.sock = ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(self.url)
        self.seq = 0
        self.buffer: list[tuple[int, bytes]] = []  # what a replay socket would hold

    async def send(self, *events: Any) -> None:
        payload = msgspec.msgpack.encode([1.0, list(events), 0])
        self.buffer.append((self.seq, payload))
        await self.sock.send_multipart([b"kv-events", self.seq.to_bytes(8, "big"), payload])
        self.seq += 1


async def eventually(check: Callable[[], Any], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        if await check():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@pytest.fixture
async def ctx() -> AsyncIterator[zmq.asyncio.Context]:
    context = zmq.asyncio.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def publisher(ctx: zmq.asyncio.Context) -> Iterator[Callable[[], Publisher]]:
    made: list[Publisher] = []

    def make() -> Publisher:
        made.append(Publisher(ctx))
        return made[-1]

    yield make
    for pub in made:
        pub.sock.close(linger=0)


async def joined(pub: Publisher, sub: KVEventSubscriber) -> None:
    """Send empty batches until the subscriber sees them (ZMQ's slow-joiner window)."""
    before = sub.stats.batches

    async def seen() -> bool:
        await pub.send()
        return sub.stats.batches > before

    await eventually(seen)


def stored(hashes: list[int], parent: int | None, tokens: list[int]) -> dict[str, Any]:
    return {"type": "BlockStored", "block_hashes": hashes, "parent_block_hash": parent,
            "token_ids": tokens, "block_size": 16}  # fmt: skip


async def test_follows_two_engines_and_unsubscribes(
    ctx: zmq.asyncio.Context, publisher: Callable[[], Publisher]
) -> None:
    index = MemoryIndex()
    sub = KVEventSubscriber(index, context=ctx)
    one, two = publisher(), publisher()
    await sub.add_endpoint("127.0.0.1:9001", one.url, MODEL)
    await sub.add_endpoint("127.0.0.1:9002", two.url, MODEL)
    sub.start()
    try:
        await joined(one, sub)
        await joined(two, sub)
        await one.send(stored([1, 2, 3, 4], None, PROMPT))
        await two.send(stored([5], None, PROMPT[:16]))
        hashes = block_hashes(PROMPT, scope=MODEL)
        want = {"127.0.0.1:9001": 4, "127.0.0.1:9002": 1}

        async def both() -> bool:
            return await index.match(hashes, list(want)) == want

        await eventually(both)
        await one.send({"type": "BlockRemoved", "block_hashes": [3]})

        async def evicted() -> bool:
            return (await index.match(hashes, ["127.0.0.1:9001"]))["127.0.0.1:9001"] == 2

        await eventually(evicted)
        await sub.remove_endpoint("127.0.0.1:9002")
        assert sub.endpoints() == ["127.0.0.1:9001"]
        assert await index.match(hashes, ["127.0.0.1:9002"]) == {"127.0.0.1:9002": 0}
    finally:
        await sub.close()


async def test_lost_batches_are_detected_on_the_wire(
    ctx: zmq.asyncio.Context, publisher: Callable[[], Publisher]
) -> None:
    index = MemoryIndex()
    sub = KVEventSubscriber(index, context=ctx)
    pub = publisher()
    await sub.add_endpoint("127.0.0.1:9001", pub.url, MODEL)
    sub.start()
    try:
        await joined(pub, sub)
        await pub.send(stored([1, 2], None, PROMPT[:32]))
        pub.seq += 3  # three batches "dropped by the HWM"
        await pub.send(stored([9], None, PROMPT[32:48]))

        async def resynced() -> bool:
            return sub.stats.gaps == 1 and len(index) == 1

        await eventually(resynced)
        assert await index.match(block_hashes(PROMPT, scope=MODEL), ["127.0.0.1:9001"]) == {
            "127.0.0.1:9001": 0
        }
    finally:
        await sub.close()


class ReplayServer:
    """vLLM's replay ROUTER: answers a start seq with every buffered batch ≥ it, then the −1 end marker."""

    def __init__(self, ctx: zmq.asyncio.Context, buffer: list[tuple[int, bytes]]) -> None:
        self.url = f"tcp://127.0.0.1:{free_port()}"
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(self.url)
        self.buffer = buffer
        self.requests: list[int] = []
        self.task = asyncio.create_task(self.serve())

    async def serve(self) -> None:
        while True:
            identity, *_, start = await self.sock.recv_multipart()
            self.requests.append(int.from_bytes(start, "big"))
            for seq, payload in list(self.buffer):
                if seq >= self.requests[-1]:
                    await self.sock.send_multipart([identity, b"", seq.to_bytes(8, "big"), payload])
            await self.sock.send_multipart([identity, b"", (-1).to_bytes(8, "big", signed=True), b""])

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.sock.close(linger=0)


def encode(*events: Any) -> bytes:
    return msgspec.msgpack.encode([1.0, list(events), 0])


@pytest.mark.parametrize("buffered_from", [0, 2], ids=["buffer-holds-the-gap", "buffer-overrun"])
async def test_gap_is_refilled_from_the_replay_buffer(
    ctx: zmq.asyncio.Context, publisher: Callable[[], Publisher], buffered_from: int
) -> None:
    index = MemoryIndex()
    sub = KVEventSubscriber(index, context=ctx)
    pub = publisher()
    batches = [
        (0, encode(stored([1, 2], None, PROMPT[:32]))),
        (1, encode(stored([3], 2, PROMPT[32:48]))),  # lost on the PUB socket
        (2, encode(stored([4], 3, PROMPT[48:64]))),
    ]
    replay = ReplayServer(ctx, [b for b in batches if b[0] >= buffered_from])
    ep = "127.0.0.1:9001"
    await sub.add_endpoint(ep, pub.url, MODEL, replay_url=replay.url)
    try:
        await sub.ingest(ep, *batches[0])
        await sub.ingest(ep, *batches[2])  # seq 1 never arrived
        hashes = block_hashes(PROMPT, scope=MODEL)
        got = (await index.match(hashes, [ep]))[ep]
        assert replay.requests == [1]
        assert sub.stats.gaps == 1
        if buffered_from == 0:
            assert (got, sub.stats.gaps_recovered, sub.stats.resyncs) == (4, 1, 0)
        else:  # the buffer starts after the gap: state dropped, the later block's parent is unknown
            assert (got, sub.stats.gaps_recovered, sub.stats.resyncs) == (0, 0, 1)
            assert sub.stats.unknown_parents == 1
    finally:
        await sub.close()
        await replay.close()


async def test_bootstrap_replay_learns_blocks_cached_before_subscribing(
    ctx: zmq.asyncio.Context, publisher: Callable[[], Publisher]
) -> None:
    index = MemoryIndex()
    sub = KVEventSubscriber(index, context=ctx)
    pub = publisher()
    pub.seq = 2
    pub.buffer += [(0, encode(stored([1, 2], None, PROMPT[:32]))), (1, encode())]
    replay = ReplayServer(ctx, pub.buffer)
    await sub.add_endpoint("127.0.0.1:9001", pub.url, MODEL, replay_url=replay.url)
    sub.start()
    try:
        hashes = block_hashes(PROMPT, scope=MODEL)

        async def learnt() -> bool:
            return await index.match(hashes, ["127.0.0.1:9001"]) == {"127.0.0.1:9001": 2}

        await eventually(learnt)
        await joined(pub, sub)  # live batches continue from seq 2 (one lost to the slow joiner is replayed)
        await pub.send(stored([3], 2, PROMPT[32:48]))

        async def extended() -> bool:
            return await index.match(hashes, ["127.0.0.1:9001"]) == {"127.0.0.1:9001": 3}

        await eventually(extended)
        assert (sub.stats.resyncs, sub.stats.restarts, sub.stats.gaps_recovered) == (0, 0, sub.stats.gaps)
    finally:
        await sub.close()
        await replay.close()
