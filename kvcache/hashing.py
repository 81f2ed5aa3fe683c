"""Chained block hashes over token ids: the router-side identity of a KV-cache block.

``h_0 = xxh3_64(scope, seed)``; ``h_i = xxh3_64(le_u64(h_{i-1}) ‖ le_u32 tokens of block i, seed)``.

* Only full blocks are hashed (as vLLM caches only full blocks); the block size must equal the engine's.
* ``scope`` separates models and LoRA adapters, because vLLM's own hashes include the adapter name: the same
  prompt under two adapters shares no cache.
* The whole prompt is packed to bytes once and hashed block by block over a memoryview (no per-block copies).
* ``parent`` continues a chain from a known router hash. Precise mode needs it: a vLLM ``BlockStored`` event
  carries only the tokens of the new blocks plus the *engine* hash of their parent, which the subscriber maps
  back to the parent's router hash (see :mod:`kvcache.subscriber`).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import xxhash

DEFAULT_BLOCK_SIZE = 16

_xxh3 = xxhash.xxh3_64_intdigest


def root_hash(*, seed: int = 0, scope: str = "") -> int:
    """The chain's virtual parent for ``scope``: what the first block of every prompt is chained to."""
    return _xxh3(scope.encode(), seed)


def block_hashes(
    tokens: Sequence[int],
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    seed: int = 0,
    scope: str = "",
    parent: int | None = None,
) -> list[int]:
    """Chained hashes of the full ``block_size`` blocks of ``tokens``, scoped to ``scope`` (model/adapter).

    With ``parent`` (a router hash from an earlier call), the chain continues from that block and ``scope`` is
    not used again: it is already folded into ``parent``.
    """
    if block_size <= 0:
        raise ValueError("block_size must be positive")
    full = len(tokens) // block_size
    if full == 0:
        return []
    try:
        packed = memoryview(array("I", tokens[: full * block_size]).tobytes())
    except OverflowError as exc:
        raise ValueError("token ids must be integers in [0, 2**32)") from exc
    step = block_size * 4
    if parent is None:
        parent = _xxh3(scope.encode(), seed)
    out = []
    for i in range(full):
        parent = _xxh3(parent.to_bytes(8, "little") + packed[i * step : (i + 1) * step], seed)
        out.append(parent)
    return out


@dataclass(frozen=True, slots=True)
class BlockHasher:
    """Block size and seed bound once, so the gateway and the KV-event subscriber cannot disagree on them."""

    block_size: int = DEFAULT_BLOCK_SIZE
    seed: int = 0

    def __post_init__(self) -> None:
        if self.block_size <= 0:
            raise ValueError("block_size must be positive")

    def hashes(self, tokens: Sequence[int], scope: str = "", *, parent: int | None = None) -> list[int]:
        return block_hashes(tokens, block_size=self.block_size, seed=self.seed, scope=scope, parent=parent)
