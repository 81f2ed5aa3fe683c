"""vLLM KV-cache events over ZMQ (reference/vllm-interface.md §4; ``vllm/distributed/kv_events.py``).

Wire format: a PUB message of 3 frames ``[topic, seq (u64 big-endian), msgpack EventBatch]``; ``seq`` starts
at 0 and grows by one per batch; one batch per engine step that changed the cache. ``EventBatch`` is the
positional array ``[ts, [events…], data_parallel_rank]``. Events are encoded in vLLM's current **map** form
(``{"type": "BlockStored", …}``, required fields always present) or, with ``format="array"``, the legacy
positional form ``["BlockStored", …]`` with trailing defaults omitted.

Optional replay (``replay_endpoint``): a ROUTER socket; a client sends the start seq (8 bytes big-endian) and
receives every buffered batch ``[identity, "", seq, payload]`` then the end marker (seq = −1, empty payload),
as vLLM's publisher answers.

Sending is non-blocking on the event loop thread (PUB drops at the high-water mark, as vLLM's does), so a
slow subscriber can never stall the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections import deque

import msgspec
import zmq
import zmq.asyncio

from engine_sim.blocks import Cleared, PoolEvent, Removed, Stored

log = logging.getLogger("engine_sim.kv_events")

END_SEQ = (-1).to_bytes(8, "big", signed=True)


class BlockStored(msgspec.Struct, tag=True, tag_field="type"):
    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None
    lora_name: str | None
    extra_keys: list[tuple[str, ...] | None] | None
    group_idx: int | None
    kv_cache_spec_kind: str | None
    kv_cache_spec_sliding_window: int | None = None


class BlockRemoved(msgspec.Struct, tag=True, tag_field="type"):
    block_hashes: list[int]
    medium: str | None
    group_idx: int | None = None


class AllBlocksCleared(msgspec.Struct, tag=True, tag_field="type"):
    pass


class LegacyBlockStored(msgspec.Struct, array_like=True, omit_defaults=True, tag="BlockStored"):
    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None = None
    medium: str | None = None
    lora_name: str | None = None


class LegacyBlockRemoved(msgspec.Struct, array_like=True, omit_defaults=True, tag="BlockRemoved"):
    block_hashes: list[int]
    medium: str | None = None


class LegacyAllBlocksCleared(msgspec.Struct, array_like=True, tag="AllBlocksCleared"):
    pass


Event = BlockStored | BlockRemoved | AllBlocksCleared
LegacyEvent = LegacyBlockStored | LegacyBlockRemoved | LegacyAllBlocksCleared


class EventBatch(msgspec.Struct, array_like=True, omit_defaults=True):
    ts: float
    events: list[Event]
    data_parallel_rank: int | None = None


class LegacyEventBatch(msgspec.Struct, array_like=True, omit_defaults=True):
    ts: float
    events: list[LegacyEvent]
    data_parallel_rank: int | None = None


def to_wire(events: list[PoolEvent], block_size: int, lora_ids: dict[str, int]) -> list[Event]:
    out: list[Event] = []
    for e in events:
        if isinstance(e, Stored):
            out.append(
                BlockStored(
                    block_hashes=e.block_hashes,
                    parent_block_hash=e.parent_block_hash,
                    token_ids=e.token_ids,
                    block_size=block_size,
                    lora_id=lora_ids.get(e.lora_name) if e.lora_name else None,
                    medium="GPU",
                    lora_name=e.lora_name,
                    extra_keys=list(e.extra_keys),
                    group_idx=0,
                    kv_cache_spec_kind="full_attention",
                )
            )
        elif isinstance(e, Removed):
            out.append(BlockRemoved(block_hashes=e.block_hashes, medium="GPU", group_idx=0))
        elif isinstance(e, Cleared):
            out.append(AllBlocksCleared())
    return out


def to_legacy(events: list[Event]) -> list[LegacyEvent]:
    out: list[LegacyEvent] = []
    for e in events:
        if isinstance(e, BlockStored):
            out.append(LegacyBlockStored(e.block_hashes, e.parent_block_hash, e.token_ids, e.block_size,
                                         e.lora_id, e.medium, e.lora_name))  # fmt: skip
        elif isinstance(e, BlockRemoved):
            out.append(LegacyBlockRemoved(e.block_hashes, e.medium))
        else:
            out.append(LegacyAllBlocksCleared())
    return out


def decode_batch(payload: bytes) -> EventBatch:
    """Decode a map-format batch (what tests and simple subscribers need)."""
    return msgspec.msgpack.decode(payload, type=EventBatch)


class KVEventPublisher:
    """One engine's PUB socket (+ optional replay ROUTER)."""

    def __init__(
        self,
        endpoint: str,
        *,
        topic: str,
        rank: int,
        fmt: str = "map",
        replay_endpoint: str | None = None,
        buffer_steps: int = 10_000,
        hwm: int = 100_000,
    ) -> None:
        # PUB on a plain context: a non-blocking send from the loop thread never waits; replay needs asyncio
        self.ctx = zmq.Context()
        self.actx = zmq.asyncio.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, hwm)
        self.pub.setsockopt(zmq.LINGER, 0)
        if "*" in endpoint or "::" in endpoint or not endpoint.startswith("tcp://") or _is_ours(endpoint):
            self.pub.bind(endpoint)
        else:
            self.pub.connect(endpoint)
        self.topic = topic.encode()
        self.rank = rank
        self.legacy = fmt == "array"
        self.seq = 0
        self.encoder = msgspec.msgpack.Encoder()
        self.buffer: deque[tuple[int, bytes]] = deque(maxlen=buffer_steps)
        self.replay: zmq.asyncio.Socket | None = None
        self._replay_task: asyncio.Task[None] | None = None
        if replay_endpoint:
            self.replay = self.actx.socket(zmq.ROUTER)
            self.replay.setsockopt(zmq.LINGER, 0)
            self.replay.bind(replay_endpoint)

    def start(self) -> None:
        if self.replay is not None and self._replay_task is None:
            self._replay_task = asyncio.get_running_loop().create_task(self._serve_replay())

    def publish(self, events: list[Event]) -> None:
        batch: EventBatch | LegacyEventBatch
        if self.legacy:
            batch = LegacyEventBatch(time.time(), to_legacy(events), self.rank)
        else:
            batch = EventBatch(time.time(), events, self.rank)
        payload = self.encoder.encode(batch)
        seq = self.seq
        self.seq += 1
        self.buffer.append((seq, payload))
        with contextlib.suppress(zmq.Again):
            self.pub.send_multipart([self.topic, seq.to_bytes(8, "big"), payload], flags=zmq.NOBLOCK)

    async def _serve_replay(self) -> None:
        assert self.replay is not None
        while True:
            frames = await self.replay.recv_multipart()
            if len(frames) < 2:
                continue
            identity, start = frames[0], int.from_bytes(frames[-1], "big")
            for seq, payload in list(self.buffer):
                if seq >= start:
                    await self.replay.send_multipart([identity, b"", seq.to_bytes(8, "big"), payload])
            await self.replay.send_multipart([identity, b"", END_SEQ, b""])

    async def close(self) -> None:
        if self._replay_task is not None:
            self._replay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replay_task
        self.pub.close(0)
        if self.replay is not None:
            self.replay.close(0)
        self.ctx.term()
        self.actx.term()


def _is_ours(endpoint: str) -> bool:
    """A concrete loopback address (a simulated pod's IP is one) is ours to serve on: bind it.

    vLLM would connect to a concrete address; the simulator has no collector to connect to, and subscribers
    (the gateway's precise mode, llm-d style) dial the engine.
    """
    host = endpoint.removeprefix("tcp://").rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
