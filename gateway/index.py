"""The gateway's prefix indexes, and the fallback that keeps routing alive while a shared index is down.

A shared (Redis) index lets several gateway replicas learn from each other's routing decisions, but Redis is
not on the critical path of a request: if it fails, :class:`ResilientIndex` answers from a local
:class:`kvcache.MemoryIndex` (which also receives every record, so it is warm) and tries Redis again after
``retry_after`` seconds. Routing quality degrades to per-replica knowledge; requests never fail because of it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence

from kvcache import MemoryIndex, PrefixIndex

log = logging.getLogger("flotilla.gateway")


class ResilientIndex:
    def __init__(
        self,
        primary: PrefixIndex,
        fallback: PrefixIndex,
        *,
        retry_after: float = 5.0,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.retry_after = retry_after
        self._down_until = 0.0
        self._on_error = on_error

    @property
    def degraded(self) -> bool:
        return time.monotonic() < self._down_until

    def _failed(self, op: str, exc: BaseException) -> None:
        if not self.degraded:
            log.warning(
                "shared prefix index failed (%s: %s: %s); using the local index", op, type(exc).__name__, exc
            )
        self._down_until = time.monotonic() + self.retry_after
        if self._on_error is not None:
            self._on_error()

    async def match(self, hashes: Sequence[int], endpoints: Collection[str]) -> dict[str, int]:
        if not self.degraded:
            try:
                return await self.primary.match(hashes, endpoints)
            except Exception as exc:  # any backend failure: the boundary where index errors stop
                self._failed("match", exc)
        return await self.fallback.match(hashes, endpoints)

    async def record(self, endpoint: str, hashes: Sequence[int]) -> None:
        await self.fallback.record(endpoint, hashes)
        if not self.degraded:
            try:
                await self.primary.record(endpoint, hashes)
            except Exception as exc:
                self._failed("record", exc)

    async def evict(self, endpoint: str, hashes: Sequence[int]) -> None:
        await self.fallback.evict(endpoint, hashes)
        if not self.degraded:
            try:
                await self.primary.evict(endpoint, hashes)
            except Exception as exc:
                self._failed("evict", exc)

    async def remove_endpoint(self, endpoint: str) -> None:
        await self.fallback.remove_endpoint(endpoint)
        if not self.degraded:
            try:
                await self.primary.remove_endpoint(endpoint)
            except Exception as exc:
                self._failed("remove_endpoint", exc)

    async def close(self) -> None:
        try:
            await self.primary.close()
        finally:
            await self.fallback.close()


def build_index(
    backend: str, redis_url: str | None, *, on_error: Callable[[], None] | None = None
) -> PrefixIndex:
    """``memory`` → a local MemoryIndex; ``redis`` → kvcache's RedisIndex behind a local fallback."""
    if backend == "memory":
        return MemoryIndex()
    if not redis_url:
        raise ValueError("index_backend 'redis' needs redis_url")
    try:
        from kvcache import RedisIndex  # type: ignore[attr-defined,unused-ignore]
    except ImportError as exc:
        raise ValueError("this build of kvcache has no RedisIndex; use index_backend 'memory'") from exc
    primary: PrefixIndex = RedisIndex(redis_url)
    return ResilientIndex(primary, MemoryIndex(), on_error=on_error)
