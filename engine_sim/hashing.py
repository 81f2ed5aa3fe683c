"""Engine-side block hashes, following vLLM's scheme (``vllm/v1/core/kv_cache_utils.py``).

``hash_i = SHA-256(encode((parent_digest or NONE_HASH, tuple(block_tokens), extra_keys or None)))``

* ``encode`` is canonical msgpack (vLLM's ``sha256_cbor`` uses canonical CBOR; the structure is the same).
* ``NONE_HASH`` = SHA-256 of the seed string, as vLLM derives it from ``PYTHONHASHSEED``.
* ``extra_keys`` carry the LoRA adapter name and, on the first block only, ``cache_salt``, so the same prompt
  under another adapter or salt gets different hashes.
* Events and the cache index use the low 64 bits of the digest (``VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=1``).

This is deliberately **not** the router's xxh3 scheme in ``kvcache/hashing.py``: in production the router
never sees vLLM's hashes as anything but opaque ids and recomputes its own from the events' token ids, and the
simulator must keep routers honest about that.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import msgspec

_MASK64 = (1 << 64) - 1
_encoder = msgspec.msgpack.Encoder()

ExtraKeys = tuple[str, ...] | None


def none_hash(seed: int | str) -> bytes:
    """The root parent of every chain (vLLM: ``sha256(PYTHONHASHSEED)``)."""
    return hashlib.sha256(str(seed).encode()).digest()


def block_digest(parent: bytes, tokens: Sequence[int], extra_keys: ExtraKeys) -> bytes:
    return hashlib.sha256(_encoder.encode((parent, tuple(tokens), extra_keys))).digest()


def as_int(digest: bytes) -> int:
    """The 64-bit id vLLM publishes for a digest: its low 64 bits, big-endian."""
    return int.from_bytes(digest, "big") & _MASK64


def extra_keys_for(block_index: int, lora_name: str | None, cache_salt: str | None) -> ExtraKeys:
    keys: list[str] = []
    if lora_name:
        keys.append(lora_name)
    if cache_salt and block_index == 0:
        keys.append(cache_salt)
    return tuple(keys) if keys else None


class BlockHasher:
    """Incrementally hashes the full blocks of one request's growing token sequence."""

    __slots__ = ("_block_size", "_cache_salt", "_lora_name", "_parent", "extra", "hashes")

    def __init__(self, root: bytes, block_size: int, lora_name: str | None, cache_salt: str | None) -> None:
        self._parent = root
        self._block_size = block_size
        self._lora_name = lora_name
        self._cache_salt = cache_salt
        self.hashes: list[int] = []
        self.extra: list[ExtraKeys] = []

    def extend(self, tokens: Sequence[int]) -> None:
        """Hash every not yet hashed full block of ``tokens`` (the request's whole sequence so far)."""
        bs = self._block_size
        while (len(self.hashes) + 1) * bs <= len(tokens):
            i = len(self.hashes)
            extra = extra_keys_for(i, self._lora_name, self._cache_salt)
            digest = block_digest(self._parent, tokens[i * bs : (i + 1) * bs], extra)
            self._parent = digest
            self.hashes.append(as_int(digest))
            self.extra.append(extra)
