"""The KV block pool and its prefix-cache index, with vLLM V1's free-list semantics (``block_pool.py``).

* Block 0 is vLLM's reserved null block; ``num_gpu_blocks - 1`` blocks are usable.
* The free list is an LRU queue. Freed blocks go to the **tail** and keep their hash (they stay hittable);
  allocation pops the **head**, and a popped block that still had a hash is evicted from the index
  (→ ``BlockRemoved``). A prefix hit on a free block removes it from the queue ("touch").
* A request frees its blocks in reverse order, so its later blocks are evicted before its shared prefix.
* ``usage = 1 - free / (total - 1)``: evictable cached blocks count as free, so a cache can be full of
  history at 0 % usage, exactly as ``vllm:kv_cache_usage_perc`` reports it.
* Two blocks may hold the same content (two requests computed it in the same step); the index maps a hash to
  every block holding it, and evicting one copy still emits ``BlockRemoved`` as vLLM does.

Events are recorded only when a sink is attached (KV events enabled), so the hot path pays nothing otherwise.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from engine_sim.hashing import ExtraKeys


@dataclass(slots=True)
class Stored:
    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    lora_name: str | None
    extra_keys: list[ExtraKeys]


@dataclass(slots=True)
class Removed:
    block_hashes: list[int]


@dataclass(slots=True)
class Cleared:
    pass


PoolEvent = Stored | Removed | Cleared


class BlockPool:
    def __init__(self, num_blocks: int, block_size: int, *, record_events: bool = False) -> None:
        if num_blocks < 2:
            raise ValueError("num_gpu_blocks must be >= 2 (block 0 is reserved)")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.ref = [0] * num_blocks
        self.hash: list[int | None] = [None] * num_blocks
        self.free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(1, num_blocks))
        self.cached: dict[int, dict[int, None]] = {}
        self.record_events = record_events
        self.events: list[PoolEvent] = []
        self.evictions = 0

    # ------------------------------------------------------------------ queries
    @property
    def usable(self) -> int:
        return self.num_blocks - 1

    @property
    def num_free(self) -> int:
        return len(self.free)

    def usage(self) -> float:
        return 1.0 - len(self.free) / self.usable

    def longest_cached_prefix(self, hashes: Sequence[int]) -> list[int]:
        """Block ids of the longest chain of ``hashes`` present in the cache."""
        out: list[int] = []
        for h in hashes:
            holders = self.cached.get(h)
            if not holders:
                break
            out.append(next(iter(holders)))
        return out

    def evictable_among(self, block_ids: Sequence[int]) -> int:
        """How many of ``block_ids`` sit in the free list (touching them consumes free capacity)."""
        return sum(1 for b in block_ids if self.ref[b] == 0)

    # ------------------------------------------------------------------ mutations
    def touch(self, block_ids: Sequence[int]) -> None:
        for b in block_ids:
            if self.ref[b] == 0:
                del self.free[b]
            self.ref[b] += 1

    def allocate(self, n: int) -> list[int] | None:
        """``n`` fresh blocks from the LRU head, evicting their cached content; ``None`` if too few are free."""
        if n > len(self.free):
            return None
        out = []
        removed: list[int] = []
        for _ in range(n):
            b, _ = self.free.popitem(last=False)
            h = self.hash[b]
            if h is not None:
                holders = self.cached[h]
                del holders[b]
                if not holders:
                    del self.cached[h]
                self.hash[b] = None
                self.evictions += 1
                removed.append(h)
            self.ref[b] = 1
            out.append(b)
        if removed and self.record_events:
            self.events.append(Removed(removed))
        return out

    def release(self, block_ids: Sequence[int]) -> None:
        """Drop one reference from each block; unreferenced ones join the free tail, last block first."""
        for b in reversed(block_ids):
            self.ref[b] -= 1
            if self.ref[b] == 0:
                self.free[b] = None

    def store(
        self,
        block_ids: Sequence[int],
        hashes: Sequence[int],
        parent: int | None,
        tokens: list[int],
        lora_name: str | None,
        extra_keys: list[ExtraKeys],
    ) -> None:
        """Index newly filled blocks (a contiguous chain of one request) and record one ``BlockStored``."""
        for b, h in zip(block_ids, hashes, strict=True):
            self.hash[b] = h
            self.cached.setdefault(h, {})[b] = None
        if self.record_events and block_ids:
            self.events.append(Stored(list(hashes), parent, tokens, lora_name, extra_keys))

    def reset_prefix_cache(self) -> None:
        """Forget every cached hash (blocks in use stay allocated) and record ``AllBlocksCleared``."""
        self.cached.clear()
        self.hash = [None] * self.num_blocks
        if self.record_events:
            self.events.append(Cleared())

    def drain_events(self) -> list[PoolEvent]:
        events, self.events = self.events, []
        return events
