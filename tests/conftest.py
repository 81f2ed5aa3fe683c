from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.tokenizer_files import write_chatml, write_llama3
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


@pytest.fixture(scope="session")
def llama3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Llama-3-style model tokenizer directory, built locally (flotilla.tokenizer_files)."""
    return write_llama3(tmp_path_factory.mktemp("llama3"))


@pytest.fixture(scope="session")
def chatml_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ChatML (Qwen-style) model tokenizer directory with chat_template.jinja, built locally."""
    return write_chatml(tmp_path_factory.mktemp("chatml"))
