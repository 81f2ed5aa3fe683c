"""open_index: one URL setting picks the backend; bad settings get clear errors."""

from __future__ import annotations

import pytest

from kvcache import MemoryIndex, RedisIndex, open_index


async def test_memory_url_with_options() -> None:
    index = open_index("memory://?capacity=10&endpoint_capacity=4&ttl=60")
    assert isinstance(index, MemoryIndex)
    assert (index.capacity, index.endpoint_capacity, index.ttl) == (10, 4, 60.0)
    assert isinstance(open_index("memory://"), MemoryIndex)


async def test_redis_url_builds_a_redis_index_without_connecting() -> None:
    index = open_index("redis://127.0.0.1:1/0", namespace="x:")
    assert isinstance(index, RedisIndex)
    assert index.namespace == "x:"
    assert not index.healthy
    await index.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("etcd://x", "scheme must be one of", id="unknown-scheme"),
        pytest.param("localhost:6379", "scheme must be one of", id="no-scheme"),
        pytest.param("memory://?size=3", "unknown option", id="unknown-option"),
        pytest.param("memory://?capacity=lots", "invalid literal", id="bad-number"),
        pytest.param("memory://?capacity=0", "positive", id="zero-capacity"),
    ],
)
def test_bad_urls_are_rejected(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_index(url)
