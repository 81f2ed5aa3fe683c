"""Precise mode: follow each engine's KV-cache events and mirror its cache into a :class:`PrefixIndex`.

One ZMQ SUB socket and one owned task per engine keep that engine's events in order. For every batch:

* **Sequence check.** vLLM numbers batches per publisher from 0. A jump forward means ZMQ dropped batches
  (PUB is at-most-once: HWM, slow joiner), so removals may have been missed: the endpoint is *resynced*
  (its state dropped from the index and from the hash map; it is rebuilt from later events), unless the
  lost batches can be replayed (below). A jump back means the engine restarted with an empty cache: also a
  resync. The first batch seen sets the baseline.
* **BlockStored.** vLLM's own hashes cannot be reproduced outside the engine (pickle/random seed, and the
  event carries only 64 bits of the parent), so, like llm-d and Dynamo, the router hashes are recomputed
  from the event's ``token_ids``, scoped to ``lora_name`` or else the endpoint's model, continuing the chain
  from the parent's *router* hash found in a per-endpoint engine-hash → router-hash map. A parent that is
  not in the map (events before we subscribed) makes the new blocks unreachable for us: they are skipped and
  counted, and the rest of the state stays valid (a true loss after subscribing shows up as a seq gap).
* **BlockRemoved** maps engine hashes back to router hashes (ref-counted: two engine blocks can share one
  router hash when the engine's hash covers extra keys ours does not, e.g. ``cache_salt``) and evicts them.
* **AllBlocksCleared** forgets the endpoint.
* **Replay** (optional, when the engine has a ``replay_endpoint``): on subscribing, the engine's buffered
  batches are replayed first, so blocks cached before we joined are known; on a seq gap the lost batches are
  fetched and applied in order, and only if the buffer no longer holds them is the endpoint resynced.

Only GPU-resident blocks of KV group 0 count (``medium`` nil/"GPU", ``group_idx`` nil/0): offloaded copies
and the extra groups of hybrid models do not make a prefill hit on the GPU. A block-size mismatch between
engine and router silently breaks matching in other routers (Dynamo PR #1233); here it is counted and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import zmq
import zmq.asyncio

from kvcache.errors import EventDecodeError, ReplayFailed
from kvcache.events import AllBlocksCleared, BlockRemoved, BlockStored, EngineHash, decode_batch
from kvcache.hashing import DEFAULT_BLOCK_SIZE, block_hashes
from kvcache.protocol import PrefixIndex
from kvcache.replay import fetch_replay

log = logging.getLogger("flotilla.kvcache.events")

DEFAULT_MAX_BLOCKS_PER_ENDPOINT = 4_000_000
_ZMQ_SCHEMES = ("tcp://", "ipc://", "inproc://")


@dataclass
class SubscriberStats:
    """Counters exported as metrics by the gateway."""

    batches: int = 0
    events: int = 0
    blocks_stored: int = 0
    blocks_removed: int = 0
    clears: int = 0
    gaps: int = 0
    restarts: int = 0
    resyncs: int = 0
    unknown_parents: int = 0
    decode_errors: int = 0
    skipped: int = 0
    block_size_mismatches: int = 0
    replays: int = 0
    replayed_batches: int = 0
    gaps_recovered: int = 0


@dataclass(eq=False)
class _Engine:
    endpoint: str
    zmq_url: str
    model: str
    replay_url: str | None = None
    last_seq: int | None = None
    skip_upto: int | None = None
    router_of: dict[EngineHash, int] = field(default_factory=dict)
    refs: dict[int, int] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None


class KVEventSubscriber:
    def __init__(
        self,
        index: PrefixIndex,
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
        seed: int = 0,
        max_blocks_per_endpoint: int = DEFAULT_MAX_BLOCKS_PER_ENDPOINT,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        if block_size <= 0:
            raise ValueError("block_size must be positive")
        self.index = index
        self.block_size = block_size
        self.seed = seed
        self.max_blocks_per_endpoint = max_blocks_per_endpoint
        self.stats = SubscriberStats()
        self._context = context
        self._owns_context = context is None
        self._engines: dict[str, _Engine] = {}
        self._started = False
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start following every endpoint added so far (and those added later)."""
        if self._closed:
            raise RuntimeError("KVEventSubscriber is closed")
        self._started = True
        for engine in self._engines.values():
            self._spawn(engine)

    async def close(self) -> None:
        self._closed = True
        for engine in list(self._engines.values()):
            await self._stop(engine)
        self._engines.clear()
        if self._owns_context and self._context is not None:
            self._context.term()
            self._context = None

    async def add_endpoint(
        self, endpoint: str, zmq_url: str, model: str, *, replay_url: str | None = None
    ) -> None:
        """Follow ``zmq_url`` (the engine's publisher) for ``endpoint``; idempotent for the same arguments.

        With ``replay_url`` (the engine's ``replay_endpoint``), the subscriber first replays the engine's
        buffer to learn blocks cached before it subscribed, and refills lost batches instead of resyncing.
        """
        if self._closed:
            raise RuntimeError("KVEventSubscriber is closed")
        for url in (zmq_url, replay_url):
            if url is not None and not url.startswith(_ZMQ_SCHEMES):
                raise ValueError(
                    f"not a ZMQ endpoint URL: {url!r} (expected one of {', '.join(_ZMQ_SCHEMES)})"
                )
        known = self._engines.get(endpoint)
        if known is not None:
            if (known.zmq_url, known.model, known.replay_url) == (zmq_url, model, replay_url):
                return
            await self.remove_endpoint(endpoint)
        engine = _Engine(endpoint, zmq_url, model, replay_url)
        self._engines[endpoint] = engine
        if self._started:
            self._spawn(engine)

    async def remove_endpoint(self, endpoint: str) -> None:
        """Stop following ``endpoint`` and forget its blocks."""
        engine = self._engines.pop(endpoint, None)
        if engine is not None:
            await self._stop(engine)
        await self.index.remove_endpoint(endpoint)

    def endpoints(self) -> list[str]:
        return list(self._engines)

    # ------------------------------------------------------------------ ingest (also used by tests/bench)

    async def ingest(self, endpoint: str, seq: int, payload: bytes) -> None:
        """Apply one published batch (``seq`` from the 8-byte frame, ``payload`` the msgpack frame)."""
        engine = self._engines.get(endpoint)
        if engine is None:
            raise KeyError(f"unknown endpoint {endpoint!r}; call add_endpoint first")
        if engine.skip_upto is not None:
            if seq <= engine.skip_upto:
                return  # already applied from the replay that bootstrapped this endpoint
            engine.skip_upto = None
        last = engine.last_seq
        if last is not None and seq != last + 1:
            if seq > last + 1:
                self.stats.gaps += 1
                log.warning("kv events from %s: lost batches %d..%d", endpoint, last + 1, seq - 1)
                if not await self._fill_gap(engine, last + 1, seq):
                    await self._resync(engine)
            else:
                self.stats.restarts += 1
                log.info("kv events from %s: seq went back %d -> %d (engine restart)", endpoint, last, seq)
                await self._resync(engine)
        engine.last_seq = seq
        await self._apply(engine, seq, payload)

    async def _apply(self, engine: _Engine, seq: int, payload: bytes) -> None:
        try:
            batch = decode_batch(payload)
        except EventDecodeError as exc:
            self.stats.decode_errors += 1
            log.warning("kv events from %s: undecodable batch %d, resyncing: %s", engine.endpoint, seq, exc)
            await self._resync(engine)  # it may have carried removals we cannot apply
            return
        stats = self.stats
        stats.batches += 1
        stats.events += len(batch.events)
        stats.skipped += batch.unknown_events
        for event in batch.events:
            if isinstance(event, BlockStored):
                await self._stored(engine, event)
            elif isinstance(event, BlockRemoved):
                await self._removed(engine, event)
            elif isinstance(event, AllBlocksCleared):
                stats.clears += 1
                await self._forget(engine)
        if len(engine.router_of) > self.max_blocks_per_endpoint:
            log.warning(
                "kv events from %s: over %d live blocks, resyncing", engine.endpoint, len(engine.router_of)
            )
            await self._resync(engine)

    async def _fill_gap(self, engine: _Engine, start: int, until: int) -> bool:
        """Fetch the lost batches ``start..until-1`` from the engine's replay socket; False if impossible."""
        if engine.replay_url is None:
            return False
        try:
            batches = await fetch_replay(self._zmq(), engine.replay_url, start)
        except ReplayFailed as exc:
            log.warning("kv events from %s: %s", engine.endpoint, exc)
            return False
        self.stats.replays += 1
        wanted = [(s, p) for s, p in batches if start <= s < until]
        if [s for s, _ in wanted] != list(range(start, until)):
            return False  # the publisher's buffer no longer holds them all
        for s, payload in wanted:
            engine.last_seq = s
            await self._apply(engine, s, payload)
        self.stats.replayed_batches += len(wanted)
        self.stats.gaps_recovered += 1
        return True

    async def _bootstrap(self, engine: _Engine) -> None:
        """Learn what the engine cached before we subscribed, from its replay buffer (if it has one)."""
        if engine.replay_url is None:
            return
        try:
            batches = await fetch_replay(self._zmq(), engine.replay_url, 0)
        except ReplayFailed as exc:
            log.warning("kv events from %s: no bootstrap replay: %s", engine.endpoint, exc)
            return
        self.stats.replays += 1
        for seq, payload in batches:
            await self.ingest(engine.endpoint, seq, payload)
        self.stats.replayed_batches += len(batches)
        engine.skip_upto = engine.last_seq  # the SUB socket may hold the same batches: apply them once

    async def _stored(self, engine: _Engine, event: BlockStored) -> None:
        if event.medium not in (None, "GPU") or event.group_idx not in (None, 0):
            self.stats.skipped += 1
            return
        if event.block_size != self.block_size:
            self.stats.block_size_mismatches += 1
            if self.stats.block_size_mismatches == 1:
                log.error(
                    "kv events from %s: engine block size %d != router block size %d; its blocks are ignored",
                    engine.endpoint,
                    event.block_size,
                    self.block_size,
                )
            return
        parent: int | None = None
        if event.parent_block_hash is not None:
            parent = engine.router_of.get(event.parent_block_hash)
            # legacy producers (llm-d-inference-sim) write 0 for "no parent"
            if parent is None and event.parent_block_hash != 0:
                self.stats.unknown_parents += 1
                return
        scope = event.lora_name or engine.model
        hashes = block_hashes(
            event.token_ids, block_size=self.block_size, seed=self.seed, scope=scope, parent=parent
        )
        router_of, refs = engine.router_of, engine.refs
        for engine_hash, router_hash in zip(event.block_hashes, hashes, strict=True):
            if engine_hash not in router_of:
                router_of[engine_hash] = router_hash
                refs[router_hash] = refs.get(router_hash, 0) + 1
        self.stats.blocks_stored += len(hashes)
        await self.index.record(engine.endpoint, hashes)

    async def _removed(self, engine: _Engine, event: BlockRemoved) -> None:
        if event.medium not in (None, "GPU") or event.group_idx not in (None, 0):
            self.stats.skipped += 1
            return
        router_of, refs = engine.router_of, engine.refs
        gone: list[int] = []
        for engine_hash in event.block_hashes:
            router_hash = router_of.pop(engine_hash, None)
            if router_hash is None:
                continue
            left = refs[router_hash] - 1
            if left:
                refs[router_hash] = left
            else:
                del refs[router_hash]
                gone.append(router_hash)
        self.stats.blocks_removed += len(gone)
        if gone:
            await self.index.evict(engine.endpoint, gone)

    async def _resync(self, engine: _Engine) -> None:
        self.stats.resyncs += 1
        await self._forget(engine)

    async def _forget(self, engine: _Engine) -> None:
        engine.router_of.clear()
        engine.refs.clear()
        await self.index.remove_endpoint(engine.endpoint)

    # ------------------------------------------------------------------ sockets

    def _spawn(self, engine: _Engine) -> None:
        if engine.task is None:
            engine.task = asyncio.create_task(self._follow(engine), name=f"kv-events {engine.endpoint}")

    async def _stop(self, engine: _Engine) -> None:
        task, engine.task = engine.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _zmq(self) -> zmq.asyncio.Context:
        if self._context is None:
            self._context = zmq.asyncio.Context()
        return self._context

    async def _follow(self, engine: _Engine) -> None:
        sock = self._zmq().socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        try:
            sock.connect(engine.zmq_url)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            log.error("kv events for %s: cannot connect to %s: %s", engine.endpoint, engine.zmq_url, exc)
            return
        try:
            await self._bootstrap(engine)
            while True:
                frames = await sock.recv_multipart()
                if len(frames) != 3 or len(frames[1]) != 8:
                    self.stats.decode_errors += 1
                    continue
                try:
                    await self.ingest(engine.endpoint, int.from_bytes(frames[1], "big"), frames[2])
                except Exception:  # one bad batch must not stop following the engine
                    log.exception("kv events from %s: failed to apply a batch, resyncing", engine.endpoint)
                    await self._resync(engine)
        finally:
            sock.close(linger=0)
