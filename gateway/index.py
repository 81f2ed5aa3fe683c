"""The gateway's prefix indexes: which one answers ``match`` for a profile, and how they are built.

* **approximate** (always present): learned from this gateway's routing decisions — ``record`` is called with
  the chosen endpoint before the request is sent, so a burst of requests sees its own decisions. Backend
  ``memory`` (per replica) or ``redis`` (:class:`kvcache.RedisIndex`, shared by replicas; it answers from a
  local mirror while Redis is down, so routing never fails because Redis did).
* **precise** (``prefix_mode="precise"``): fed only by the engines' KV events through
  :class:`kvcache.KVEventSubscriber`, so it also sees evictions. Every replica subscribes to every engine
  (as llm-d's ``discoverPods``), so this index is local to the replica.
"""

from __future__ import annotations

from typing import Any

from kvcache import MemoryIndex, PrefixIndex


def build_index(backend: str, redis_url: str | None) -> PrefixIndex:
    if backend == "memory":
        return MemoryIndex()
    if not redis_url:
        raise ValueError("index_backend 'redis' needs redis_url")
    try:
        from kvcache import RedisIndex  # type: ignore[attr-defined,unused-ignore]
    except ImportError as exc:
        raise ValueError("this build of kvcache has no RedisIndex; use index_backend 'memory'") from exc
    index: PrefixIndex = RedisIndex(redis_url)
    return index


def build_subscriber(index: PrefixIndex, *, block_size: int, seed: int) -> Any:
    """A started :class:`kvcache.KVEventSubscriber` feeding ``index``."""
    try:
        from kvcache import KVEventSubscriber  # type: ignore[attr-defined,unused-ignore]
    except ImportError as exc:
        raise ValueError("prefix_mode 'precise' needs kvcache.KVEventSubscriber") from exc
    subscriber = KVEventSubscriber(index, block_size=block_size, seed=seed)
    subscriber.start()
    return subscriber


async def start_index(index: PrefixIndex) -> None:
    """Connect an index that has a ``start`` (RedisIndex) now rather than on the first request."""
    start = getattr(index, "start", None)
    if start is not None:
        await start()
