"""The test harness (loopback guard, free ports, a real Redis) lives in :mod:`bench.harness.localhost`, which the
benchmarks use too; tests import it from here."""

from bench.harness.localhost import (
    LOOPBACK_NAMES,
    RedisServer,
    free_port,
    install_loopback_guard,
    is_loopback,
    redis_server,
    redis_server_binary,
    wait_for_port,
)

__all__ = [
    "LOOPBACK_NAMES",
    "RedisServer",
    "free_port",
    "install_loopback_guard",
    "is_loopback",
    "redis_server",
    "redis_server_binary",
    "wait_for_port",
]
