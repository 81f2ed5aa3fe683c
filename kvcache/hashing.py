"""Chained block hashes over token ids: the router-side identity of a KV-cache block.

``h_0 = xxh3_64(scope, seed)``; ``h_i = xxh3_64(le_u64(h_{i-1}) ‖ le_u32 tokens of block i, seed)``.

* Only full blocks are hashed (as vLLM caches only full blocks); the block size must equal the engine's.
* ``scope`` separates models and LoRA adapters, because vLLM's own hashes include the adapter name: the same
  prompt under two adapters shares no cache.
* The whole prompt is packed to bytes once and hashed block by block over a memoryview (no per-block copies).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

import xxhash

DEFAULT_BLOCK_SIZE = 16

_xxh3 = xxhash.xxh3_64_intdigest


def block_hashes(
    tokens: Sequence[int], *, block_size: int = DEFAULT_BLOCK_SIZE, seed: int = 0, scope: str = ""
) -> list[int]:
    """Chained hashes of the full ``block_size`` blocks of ``tokens``, scoped to ``scope`` (model/adapter)."""
    if block_size <= 0:
        raise ValueError("block_size must be positive")
    full = len(tokens) // block_size
    if full == 0:
        return []
    packed = memoryview(array("I", tokens[: full * block_size]).tobytes())
    step = block_size * 4
    parent = _xxh3(scope.encode(), seed)
    out = []
    for i in range(full):
        parent = _xxh3(parent.to_bytes(8, "little") + packed[i * step : (i + 1) * step], seed)
        out.append(parent)
    return out
