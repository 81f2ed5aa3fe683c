"""The index contract every backend implements (in-process, Redis) and the gateway consumes."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol


class PrefixIndex(Protocol):
    """Which endpoint holds which prefix blocks.

    Endpoints are opaque strings (the gateway uses ``host:port``). Block hashes come from
    :func:`kvcache.hashing.block_hashes`, so they are already scoped to a model or adapter.
    """

    async def match(self, hashes: Sequence[int], endpoints: Collection[str]) -> dict[str, int]:
        """For each of ``endpoints``, how many *leading* blocks of ``hashes`` it holds (0 if none).

        A block counts only if every block before it is held by the same endpoint.
        """
        ...

    async def record(self, endpoint: str, hashes: Sequence[int]) -> None:
        """``endpoint`` now holds these blocks (approximate mode: it was routed this prompt)."""
        ...

    async def evict(self, endpoint: str, hashes: Sequence[int]) -> None:
        """``endpoint`` no longer holds these blocks (precise mode: BlockRemoved)."""
        ...

    async def remove_endpoint(self, endpoint: str) -> None:
        """Forget everything about ``endpoint`` (it went away, or its cache was cleared)."""
        ...

    async def close(self) -> None: ...
