"""In-process prefix index (the embedded default): bounded, LRU/TTL, and fast enough to sit in every request.

Layout, chosen for the hot path (``match`` over a 128-block prompt in a few µs per block; ``record`` runs on
every routed request, so it must not loop over blocks in Python):

* Each endpoint gets a bit; ``_holders`` maps a block hash to the bitmask of endpoints holding it. ``match``
  walks the prompt's hashes once, ANDing masks, and stops at the first block no candidate holds: one dict
  lookup and one integer AND per block, whatever the number of endpoints.
* Recency is kept per *record call*, not per block: each ``record`` appends one segment (its blocks in
  recency order, the time, a live count) to a global and a per-endpoint ``OrderedDict`` of segments, and
  points the endpoint's ``where`` map (block -> segment number) at it. A prompt is stored with a few C-speed
  bulk passes (``dict.fromkeys``/``update``, ``isdisjoint``, set differences) and evicted in bulk runs. The
  earlier ``OrderedDict`` entry per block needed a Python loop per block: about half the time on distinct
  prompts (docs/benchmarks.md, kvcache_micro ``--baseline-src``); what remains at a full 500k-entry index is
  mostly cache misses in the two big dicts.
* A block recorded again moves to the new segment. The usual case, a shared prefix (a system prompt), is the
  old segment's most recent blocks, its last entries: they are cut off its end. Otherwise the old entry goes
  *stale* (``where`` no longer points there): skipped when the segment is consumed, and a segment that is
  mostly stale is rebuilt when its live count drops below a quarter of its length, so memory stays within
  ~4× the live entries and no call pays more than one segment's rebuild (≤ one request's blocks; no stall).

Bounds (an unbounded trie is a known production OOM, production-stack#687):

* ``capacity`` caps the total number of (endpoint, block) entries; the globally least recently recorded entry
  goes first. ``endpoint_capacity`` optionally caps one endpoint (set it to the engine's KV blocks to model
  the engine's own LRU); :meth:`MemoryIndex.cap_endpoint` sets it per endpoint (the gateway uses each engine's
  reported KV size, so a fleet of mixed GPUs is modelled per engine). ``ttl`` drops entries not recorded for
  that many seconds.
* A prompt's blocks are touched tail first, so the *first* block of a prompt is the most recent: eviction
  eats chains from the tail like vLLM's free list does (tail blocks are freed first), and never cuts a chain
  at its root, which would make every later block unreachable.

The specification is one LRU list of (endpoint, block) pairs (tests/unit/test_kvcache_memory.py checks this
layout against it on random scripts). ``match`` is read-only (it does not refresh recency): the gateway
records the prompt against the endpoint it picks, which is what touches the blocks on that engine.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Collection, Sequence

DEFAULT_CAPACITY = 500_000  # ~80 MiB at ~170 B per entry (docs/benchmarks.md): 18 engines of 27k blocks

#: a segment is rebuilt without its stale entries once fewer than 1/_REBUILD of its entries are live
_REBUILD = 4
#: ... and only if it is at least this long (rebuilding tiny segments costs more than it saves)
_REBUILD_MIN = 32


class _Endpoint:
    __slots__ = ("bit", "segments", "where")

    def __init__(self, bit: int) -> None:
        self.bit = bit
        #: block -> number of the segment (record call) that last touched it: the endpoint's live blocks
        self.where: dict[int, int] = {}
        #: this endpoint's segments holding a live block, oldest first
        self.segments: OrderedDict[int, _Segment] = OrderedDict()


class _Segment:
    """One ``record`` call: its blocks least recent first; ``blocks[:start]`` are consumed already."""

    __slots__ = ("blocks", "live", "owner", "seq", "start", "time")

    def __init__(self, seq: int, time: float, owner: _Endpoint, blocks: list[int]) -> None:
        self.seq = seq
        self.time = time
        self.owner = owner
        self.blocks = blocks
        self.start = 0
        self.live = len(blocks)


class MemoryIndex:
    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        *,
        endpoint_capacity: int | None = None,
        ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be a positive number of blocks")
        if endpoint_capacity is not None and endpoint_capacity <= 0:
            raise ValueError("endpoint_capacity must be a positive number of blocks")
        if ttl is not None and ttl <= 0:
            raise ValueError("ttl must be a positive number of seconds")
        self.capacity = capacity
        self.endpoint_capacity = endpoint_capacity
        self.ttl = ttl
        self._clock = clock
        self._holders: dict[int, int] = {}
        self._bits: dict[str, int] = {}
        self._endpoints: dict[str, _Endpoint] = {}
        self._free_slots: list[int] = []
        self._next_slot = 0
        #: every segment with a live block, oldest first (the global LRU order, segment by segment)
        self._segments: OrderedDict[int, _Segment] = OrderedDict()
        self._seq = 0
        self._size = 0
        #: per-endpoint caps that replace ``endpoint_capacity`` for that endpoint (:meth:`cap_endpoint`)
        self._caps: dict[str, int] = {}

    def cap_endpoint(self, endpoint: str, blocks: int | None) -> None:
        """Hold at most ``blocks`` entries for ``endpoint`` from its next record on (None: back to
        ``endpoint_capacity``). :meth:`remove_endpoint` forgets it with the entries (endpoints come and go
        with pods; the caller sets it again when it learns the size)."""
        if blocks is None:
            self._caps.pop(endpoint, None)
            return
        if blocks <= 0:
            raise ValueError("an endpoint's cap must be a positive number of blocks")
        self._caps[endpoint] = blocks

    # ------------------------------------------------------------------ queries

    def __len__(self) -> int:
        """Number of (endpoint, block) entries held."""
        return self._size

    def blocks(self, endpoint: str) -> int:
        ep = self._endpoints.get(endpoint)
        return 0 if ep is None else len(ep.where)

    def endpoints(self) -> list[str]:
        return list(self._endpoints)

    def recency(self, endpoint: str) -> list[int]:
        """The blocks ``endpoint`` holds, least recently recorded first."""
        ep = self._endpoints.get(endpoint)
        if ep is None:
            return []
        where = ep.where
        return [h for s in ep.segments.values() for h in s.blocks[s.start :] if where.get(h) == s.seq]

    def stored(self) -> int:
        """Entries kept in segments, live or stale (``>= len(self)``): what the layout costs in memory."""
        return sum(len(s.blocks) - s.start for s in self._segments.values())

    def match_now(self, hashes: Sequence[int], endpoints: Collection[str]) -> dict[str, int]:
        """Synchronous ``match`` (for callers that are not coroutines, e.g. the Redis backend's fallback)."""
        if self.ttl is not None:
            self._expire(self._clock())
        result = dict.fromkeys(endpoints, 0)
        bits = self._bits
        alive = 0
        for e in result:
            alive |= bits.get(e, 0)
        if not alive:
            return result
        get = self._holders.get
        depth = 0
        for h in hashes:
            held = alive & get(h, 0)
            if held != alive:
                self._settle(result, alive & ~held, depth)
                alive = held
                if not alive:
                    return result
            depth += 1
        self._settle(result, alive, depth)
        return result

    def _settle(self, result: dict[str, int], dropped: int, depth: int) -> None:
        if depth == 0:
            return
        bits = self._bits
        for e in result:
            if bits.get(e, 0) & dropped:
                result[e] = depth

    # ------------------------------------------------------------------ Protocol

    async def match(self, hashes: Sequence[int], endpoints: Collection[str]) -> dict[str, int]:
        return self.match_now(hashes, endpoints)

    async def record(self, endpoint: str, hashes: Sequence[int]) -> None:
        self.record_now(endpoint, hashes)

    async def evict(self, endpoint: str, hashes: Sequence[int]) -> None:
        self.evict_now(endpoint, hashes)

    async def remove_endpoint(self, endpoint: str) -> None:
        self.remove_endpoint_now(endpoint)

    async def flush(self) -> None:
        """Nothing is buffered in process; present so every backend can be flushed alike."""

    async def close(self) -> None:
        return None

    # ------------------------------------------------------------------ synchronous mutators

    def record_now(self, endpoint: str, hashes: Sequence[int]) -> None:
        if not hashes:
            return
        now = self._clock()
        ep = self._endpoints.get(endpoint)
        if ep is None:
            ep = self._add_endpoint(endpoint)
        where = ep.where
        self._seq += 1
        seq = self._seq
        # touched tail first: least recent first is the prompt reversed (a repeated block counts where it
        # first occurs, as touching it again later in the reversed walk would leave it)
        blocks = list(hashes)[::-1]
        touched = dict.fromkeys(blocks, seq)
        if len(touched) != len(blocks):
            blocks = list(dict.fromkeys(hashes))[::-1]
            touched = dict.fromkeys(blocks, seq)
        # the common cases in one C-speed pass each: a prompt new to every endpoint (hence to this one: what
        # an endpoint holds is in ``_holders``), or new to this endpoint; a miss on a large index is a cache
        # miss per block, so a pass saved is time saved
        holders = self._holders
        unheld = holders.keys().isdisjoint(blocks)
        if unheld or where.keys().isdisjoint(blocks):
            new: Collection[int] = touched
        else:
            new = set(touched).difference(where)  # (a keys view on the right would be iterated whole)
            self._retouch(ep, touched.keys() - new)
        where.update(touched)
        segment = _Segment(seq, now, ep, blocks)
        ep.segments[seq] = segment
        self._segments[seq] = segment
        if new:
            if unheld or holders.keys().isdisjoint(new):
                holders.update(dict.fromkeys(new, ep.bit))
            else:
                bit = ep.bit
                for h in new:
                    holders[h] = holders.get(h, 0) | bit
            self._size += len(new)
        cap = self._caps.get(endpoint, self.endpoint_capacity)
        if cap is not None and len(where) > cap:
            over = len(where) - cap
            while over > 0:
                over -= self._consume(next(iter(ep.segments.values())), over)
        if self._size > self.capacity:
            over = self._size - self.capacity
            while over > 0:
                over -= self._consume(next(iter(self._segments.values())), over)
        if self.ttl is not None:
            self._expire(now)

    def evict_now(self, endpoint: str, hashes: Sequence[int]) -> None:
        ep = self._endpoints.get(endpoint)
        if ep is None:
            return
        for h in hashes:
            seq = ep.where.pop(h, None)
            if seq is not None:
                self._drop(ep.bit, h)
                self._release(ep.segments[seq], 1)

    def remove_endpoint_now(self, endpoint: str) -> None:
        self._caps.pop(endpoint, None)
        ep = self._endpoints.pop(endpoint, None)
        if ep is None:
            return
        del self._bits[endpoint]
        for h in ep.where:
            self._drop(ep.bit, h)
        for seq in ep.segments:
            del self._segments[seq]
        ep.where.clear()
        ep.segments.clear()
        self._free_slots.append(ep.bit.bit_length() - 1)

    # ------------------------------------------------------------------ internals

    def _add_endpoint(self, endpoint: str) -> _Endpoint:
        if self._free_slots:
            slot = self._free_slots.pop()
        else:
            slot = self._next_slot
            self._next_slot += 1
        ep = _Endpoint(1 << slot)
        self._bits[endpoint] = ep.bit
        self._endpoints[endpoint] = ep
        return ep

    def _drop(self, bit: int, h: int) -> None:
        mask = self._holders[h] & ~bit
        if mask:
            self._holders[h] = mask
        else:
            del self._holders[h]
        self._size -= 1

    def _retouch(self, ep: _Endpoint, again: set[int]) -> None:
        """Blocks of ``ep`` recorded again leave their old segments (counted per segment at C speed).

        The usual case is a shared prefix (a system prompt) recorded again: in the old segment those are the
        most recent blocks, its last entries, so they are cut off the end instead of left behind as stale."""
        segments = ep.segments
        seqs = list(map(ep.where.__getitem__, again))
        counts = {seqs[0]: len(seqs)} if seqs.count(seqs[0]) == len(seqs) else Counter(seqs)
        for seq, n in counts.items():
            segment = segments[seq]
            blocks, live = segment.blocks, segment.live
            cut = len(blocks) - n
            if n < live == len(blocks) - segment.start and again.issuperset(blocks[cut:]):
                del blocks[cut:]
                segment.live = live - n
            else:
                self._release(segment, n)

    def _release(self, segment: _Segment, n: int) -> None:
        """``n`` live blocks of ``segment`` went stale or were dropped: forget or compact it if due."""
        segment.live -= n
        if segment.live <= 0:
            self._forget(segment)
        elif (
            length := len(segment.blocks) - segment.start
        ) >= _REBUILD_MIN and segment.live * _REBUILD < length:
            where, seq = segment.owner.where, segment.seq
            segment.blocks = [h for h in segment.blocks[segment.start :] if where.get(h) == seq]
            segment.start = 0

    def _forget(self, segment: _Segment) -> None:
        del self._segments[segment.seq]
        del segment.owner.segments[segment.seq]

    def _consume(self, segment: _Segment, count: int) -> int:
        """Drop up to ``count`` live blocks of ``segment``, least recent first; returns how many it dropped."""
        ep = segment.owner
        where, seq, blocks, start = ep.where, segment.seq, segment.blocks, segment.start
        if segment.live == len(blocks) - start:  # nothing stale: drop a run of blocks in bulk
            run = blocks[start : start + count]
            deque(map(where.pop, run), maxlen=0)
            holders = self._holders
            masks = list(map(holders.pop, run))
            if masks.count(ep.bit) != len(masks):  # some are held elsewhere too: give those back
                bit = ep.bit
                for h, mask in zip(run, masks, strict=True):
                    if mask != bit:
                        holders[h] = mask & ~bit
            dropped = len(run)
            segment.start = start + dropped
        else:
            dropped = 0
            i, end = start, len(blocks)
            while i < end and dropped < count:
                h = blocks[i]
                i += 1
                if where.get(h) == seq:
                    del where[h]
                    self._drop(ep.bit, h)
                    self._size += 1  # _drop counts one; the total is taken below
                    dropped += 1
            segment.start = i
        self._size -= dropped
        segment.live -= dropped
        if segment.live <= 0:
            self._forget(segment)
        return dropped

    def _expire(self, now: float) -> None:
        assert self.ttl is not None
        horizon = now - self.ttl
        segments = self._segments
        while segments:
            segment = next(iter(segments.values()))
            if segment.time > horizon:
                break
            self._consume(segment, segment.live)
