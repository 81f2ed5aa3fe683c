"""In-process prefix index (the embedded default).

Minimal first version: a dict from block hash to the endpoints holding it. The kvcache issue replaces this
with a bounded (capacity + LRU/TTL) implementation behind the same Protocol.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence


class MemoryIndex:
    def __init__(self) -> None:
        self._holders: dict[int, set[str]] = {}

    async def match(self, hashes: Sequence[int], endpoints: Collection[str]) -> dict[str, int]:
        alive = set(endpoints)
        result = dict.fromkeys(endpoints, 0)
        for depth, h in enumerate(hashes):
            holders = self._holders.get(h)
            if not holders:
                break
            alive &= holders
            if not alive:
                break
            for e in alive:
                result[e] = depth + 1
        return result

    async def record(self, endpoint: str, hashes: Sequence[int]) -> None:
        for h in hashes:
            self._holders.setdefault(h, set()).add(endpoint)

    async def evict(self, endpoint: str, hashes: Sequence[int]) -> None:
        for h in hashes:
            holders = self._holders.get(h)
            if holders is not None:
                holders.discard(endpoint)
                if not holders:
                    del self._holders[h]

    async def remove_endpoint(self, endpoint: str) -> None:
        for h in [h for h, holders in self._holders.items() if endpoint in holders]:
            await self.evict(endpoint, [h])

    async def close(self) -> None:
        return None
