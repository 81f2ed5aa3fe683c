"""kvcache: the index of which token-prefix blocks are cached on which engine.

* :func:`block_hashes` / :class:`BlockHasher` — router-side chained block hashes (docs/kvcache.md).
* :class:`PrefixIndex` — the contract; :class:`MemoryIndex` (in process, bounded) and :class:`RedisIndex`
  (shared by gateway replicas, local mirror when Redis is down) implement it.
* :class:`KVEventSubscriber` — precise mode: feeds an index from vLLM's KV-cache events.
* :func:`open_index` — pick a backend from a URL (``memory://``, ``redis://…``).
* :func:`infinite_cache_hits` — the hit-rate oracle for benchmarks.
"""

from kvcache.backends import BACKENDS, open_index
from kvcache.errors import EventDecodeError, IndexUnavailable, KVCacheError, ReplayFailed
from kvcache.events import AllBlocksCleared, BlockRemoved, BlockStored, EventBatch, decode_batch
from kvcache.hashing import DEFAULT_BLOCK_SIZE, BlockHasher, block_hashes, root_hash
from kvcache.memory import MemoryIndex
from kvcache.oracle import OracleResult, infinite_cache_hits
from kvcache.protocol import PrefixIndex
from kvcache.redis_index import RedisIndex, RedisIndexStats
from kvcache.subscriber import KVEventSubscriber, SubscriberStats

__all__ = [
    "BACKENDS",
    "DEFAULT_BLOCK_SIZE",
    "AllBlocksCleared",
    "BlockHasher",
    "BlockRemoved",
    "BlockStored",
    "EventBatch",
    "EventDecodeError",
    "IndexUnavailable",
    "KVCacheError",
    "KVEventSubscriber",
    "MemoryIndex",
    "OracleResult",
    "PrefixIndex",
    "RedisIndex",
    "RedisIndexStats",
    "ReplayFailed",
    "SubscriberStats",
    "block_hashes",
    "decode_batch",
    "infinite_cache_hits",
    "open_index",
    "root_hash",
]
