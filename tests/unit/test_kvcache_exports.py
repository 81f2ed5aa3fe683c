"""kvcache's public face is pinned: adding or removing a name must be deliberate."""

import kvcache


def test_exports_are_pinned() -> None:
    assert sorted(kvcache.__all__) == sorted(
        [
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
    )
    for name in kvcache.__all__:
        assert getattr(kvcache, name) is not None


def test_errors_form_one_tree() -> None:
    assert issubclass(kvcache.IndexUnavailable, kvcache.KVCacheError)
    assert issubclass(kvcache.EventDecodeError, kvcache.KVCacheError)
    assert issubclass(kvcache.ReplayFailed, kvcache.KVCacheError)
