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

from kvcache import KVEventSubscriber, PrefixIndex, RedisIndex, open_index


def build_index(backend: str, redis_url: str | None) -> PrefixIndex:
    """The approximate index, through kvcache's one backend registry (:func:`kvcache.open_index`)."""
    return open_index(redis_url if backend == "redis" and redis_url else "memory://")


def build_subscriber(index: PrefixIndex, *, block_size: int, seed: int) -> KVEventSubscriber:
    """A started subscriber feeding ``index`` (endpoints are added as they are discovered)."""
    subscriber = KVEventSubscriber(index, block_size=block_size, seed=seed)
    subscriber.start()
    return subscriber


async def start_index(index: PrefixIndex) -> None:
    """Connect a Redis index now rather than on the first request (it never raises: it falls back)."""
    if isinstance(index, RedisIndex):
        await index.start()
