from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import RedisServer, install_loopback_guard, redis_server

install_loopback_guard()


@pytest.fixture(scope="session")
def redis_session() -> Iterator[RedisServer]:
    """One real redis-server for the session (tests needing a private one use ``redis_private``)."""
    with redis_server() as server:
        yield server


@pytest.fixture
def redis_url(redis_session: RedisServer) -> str:
    redis_session.start()
    redis_session.flush()
    return redis_session.url


@pytest.fixture
def redis_private() -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may kill and restart."""
    with redis_server() as server:
        yield server
