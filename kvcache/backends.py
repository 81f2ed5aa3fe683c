"""Choosing an index backend from one URL setting (e.g. ``FLOTILLA_KV_INDEX``), through an explicit registry.

* ``memory://`` (or ``memory://?capacity=500000&endpoint_capacity=27000&ttl=1200``) → :class:`MemoryIndex`
* ``redis://host:port/db``, ``rediss://…``, ``unix:///path`` → :class:`RedisIndex` (its own keyword options,
  e.g. ``namespace``, ``ttl``, ``endpoint_capacity``, ``timeout``, come from ``options``)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from kvcache.memory import DEFAULT_CAPACITY, MemoryIndex
from kvcache.protocol import PrefixIndex
from kvcache.redis_index import RedisIndex


def _memory(url: str, **options: Any) -> PrefixIndex:
    params = dict(parse_qsl(urlsplit(url).query, strict_parsing=False))
    unknown = set(params) - {"capacity", "endpoint_capacity", "ttl"}
    if unknown:
        raise ValueError(f"memory index: unknown option(s) {sorted(unknown)} in {url!r}")
    try:
        capacity = int(params.get("capacity", options.pop("capacity", DEFAULT_CAPACITY)))
        endpoint_capacity = params.get("endpoint_capacity", options.pop("endpoint_capacity", None))
        ttl = params.get("ttl", options.pop("ttl", None))
        return MemoryIndex(
            capacity,
            endpoint_capacity=None if endpoint_capacity is None else int(endpoint_capacity),
            ttl=None if ttl is None else float(ttl),
            **options,
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"memory index {url!r}: {exc}") from exc


def _redis(url: str, **options: Any) -> PrefixIndex:
    return RedisIndex(url, **options)


#: URL scheme -> factory; the one place a backend is registered
BACKENDS: dict[str, Callable[..., PrefixIndex]] = {
    "memory": _memory,
    "redis": _redis,
    "rediss": _redis,
    "unix": _redis,
}


def open_index(url: str, **options: Any) -> PrefixIndex:
    """Build the index ``url`` names; a clear ``ValueError`` for an unknown scheme or bad option."""
    scheme = urlsplit(url).scheme
    factory = BACKENDS.get(scheme)
    if factory is None:
        raise ValueError(f"unknown kv index URL {url!r}: scheme must be one of {sorted(BACKENDS)}")
    return factory(url, **options)
