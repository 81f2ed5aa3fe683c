"""In-process prefix index (the embedded default): bounded, LRU/TTL, and fast enough to sit in every request.

Layout, chosen for the hot path (``match`` over a 128-block prompt in a few µs per block):

* Each endpoint gets a bit; ``_holders`` maps a block hash to the bitmask of endpoints holding it. ``match``
  walks the prompt's hashes once, ANDing masks, and stops at the first block no candidate holds: one dict
  lookup and one integer AND per block, whatever the number of endpoints.
* Each endpoint has an ``OrderedDict`` of its blocks in recency order (value: last-touch time). It is the
  LRU list for the capacity bounds, the age list for the TTL, and the block list for ``remove_endpoint``.

Bounds (an unbounded trie is a known production OOM, production-stack#687):

* ``capacity`` caps the total number of (endpoint, block) entries; the globally least recently recorded entry
  goes first. ``endpoint_capacity`` optionally caps one endpoint (set it to the engine's KV blocks to model
  the engine's own LRU). ``ttl`` drops entries not recorded for that many seconds.
* A prompt's blocks are touched tail first, so the *first* block of a prompt is the most recent: eviction
  eats chains from the tail like vLLM's free list does (tail blocks are freed first), and never cuts a chain
  at its root, which would make every later block unreachable.

``match`` is read-only (it does not refresh recency): the gateway records the prompt against the endpoint it
picks, which is what touches the blocks on that engine.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence

DEFAULT_CAPACITY = 500_000  # ~80 MiB at ~170 B per entry (docs/benchmarks.md): 18 engines of 27k blocks


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
        self._free_slots: list[int] = []
        self._next_slot = 0
        self._lru: dict[str, OrderedDict[int, float]] = {}
        self._size = 0

    # ------------------------------------------------------------------ queries

    def __len__(self) -> int:
        """Number of (endpoint, block) entries held."""
        return self._size

    def blocks(self, endpoint: str) -> int:
        lru = self._lru.get(endpoint)
        return 0 if lru is None else len(lru)

    def endpoints(self) -> list[str]:
        return list(self._lru)

    def recency(self, endpoint: str) -> list[int]:
        """The blocks ``endpoint`` holds, least recently recorded first."""
        return list(self._lru.get(endpoint, ()))

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
        bit = self._bits.get(endpoint)
        if bit is None:
            bit = self._add_endpoint(endpoint)
        lru = self._lru[endpoint]
        holders = self._holders
        added = 0
        for h in reversed(hashes):
            if lru.pop(h, None) is None:
                holders[h] = holders.get(h, 0) | bit
                added += 1
            lru[h] = now
        self._size += added
        if self.endpoint_capacity is not None:
            while len(lru) > self.endpoint_capacity:
                self._drop(bit, lru.popitem(last=False)[0])
        if self._size > self.capacity:
            self._evict_oldest(self._size - self.capacity)
        if self.ttl is not None:
            self._expire(now)

    def evict_now(self, endpoint: str, hashes: Sequence[int]) -> None:
        lru = self._lru.get(endpoint)
        if lru is None:
            return
        bit = self._bits[endpoint]
        for h in hashes:
            if lru.pop(h, None) is not None:
                self._drop(bit, h)

    def remove_endpoint_now(self, endpoint: str) -> None:
        lru = self._lru.pop(endpoint, None)
        if lru is None:
            return
        bit = self._bits.pop(endpoint)
        for h in lru:
            self._drop(bit, h)
        self._free_slots.append(bit.bit_length() - 1)

    # ------------------------------------------------------------------ internals

    def _add_endpoint(self, endpoint: str) -> int:
        if self._free_slots:
            slot = self._free_slots.pop()
        else:
            slot = self._next_slot
            self._next_slot += 1
        bit = 1 << slot
        self._bits[endpoint] = bit
        self._lru[endpoint] = OrderedDict()
        return bit

    def _drop(self, bit: int, h: int) -> None:
        mask = self._holders[h] & ~bit
        if mask:
            self._holders[h] = mask
        else:
            del self._holders[h]
        self._size -= 1

    def _evict_oldest(self, count: int) -> None:
        """Drop the ``count`` globally least recent entries (merge over the endpoints' LRU heads)."""
        while count > 0:
            heads = sorted((next(iter(lru.values())), e) for e, lru in self._lru.items() if lru)
            _, endpoint = heads[0]
            limit = heads[1][0] if len(heads) > 1 else float("inf")
            lru = self._lru[endpoint]
            bit = self._bits[endpoint]
            while count > 0 and lru:
                h, t = next(iter(lru.items()))
                if t > limit:
                    break
                del lru[h]
                self._drop(bit, h)
                count -= 1

    def _expire(self, now: float) -> None:
        assert self.ttl is not None
        horizon = now - self.ttl
        for endpoint, lru in self._lru.items():
            bit = self._bits[endpoint]
            while lru:
                h, t = next(iter(lru.items()))
                if t > horizon:
                    break
                del lru[h]
                self._drop(bit, h)
