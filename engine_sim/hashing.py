"""Engine-side block hashes, following vLLM's scheme (``vllm/v1/core/kv_cache_utils.py``).

``hash_i = SHA-256(CBOR((parent_digest or NONE_HASH, tuple(block_tokens), extra_keys or None)))``

* This is vLLM's ``--prefix-caching-hash-algo sha256_cbor`` exactly: ``CBOR`` is canonical CBOR (RFC 8949
  §4.2: shortest heads, definite lengths), as ``cbor2.dumps(..., canonical=True)`` writes it; the tests check
  the encoder byte for byte against ``cbor2``. (vLLM's default ``sha256`` pickles the tuple, which nothing
  outside that Python process can reproduce; ``sha256_cbor`` is the reproducible choice.)
* ``NONE_HASH`` = ``sha256_cbor(str(seed))``, as vLLM derives it from ``PYTHONHASHSEED`` (the engine's seed
  plays that role), so a router that knows the seed can recompute vLLM's hashes from token ids.
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

_MASK64 = (1 << 64) - 1

ExtraKeys = tuple[str, ...] | None


CborValue = int | str | bytes | None | Sequence["CborValue"]


def _head(major: int, n: int, out: bytearray) -> None:
    """A CBOR item head with the shortest argument encoding (canonical)."""
    if n < 24:
        out.append(major << 5 | n)
    elif n < 0x100:
        out += bytes((major << 5 | 24, n))
    elif n < 0x10000:
        out.append(major << 5 | 25)
        out += n.to_bytes(2, "big")
    elif n < 0x100000000:
        out.append(major << 5 | 26)
        out += n.to_bytes(4, "big")
    else:
        out.append(major << 5 | 27)
        out += n.to_bytes(8, "big")


def _encode(value: CborValue, out: bytearray) -> None:
    if value is None:
        out.append(0xF6)
    elif isinstance(value, bool):  # pragma: no cover - never hashed; bool is an int subclass
        raise TypeError("booleans are not part of block-hash inputs")
    elif isinstance(value, int):
        if value >= 0:
            _head(0, value, out)
        else:
            _head(1, -1 - value, out)
    elif isinstance(value, bytes):
        _head(2, len(value), out)
        out += value
    elif isinstance(value, str):
        raw = value.encode()
        _head(3, len(raw), out)
        out += raw
    else:
        _head(4, len(value), out)
        for item in value:
            _encode(item, out)


def cbor_dumps(value: CborValue) -> bytes:
    """Canonical CBOR of the value kinds block hashing uses (ints < 2**64, str, bytes, None, arrays)."""
    out = bytearray()
    _encode(value, out)
    return bytes(out)


def sha256_cbor(value: CborValue) -> bytes:
    return hashlib.sha256(cbor_dumps(value)).digest()


def none_hash(seed: int | str) -> bytes:
    """The root parent of every chain (vLLM: ``sha256_cbor(PYTHONHASHSEED)``)."""
    return sha256_cbor(str(seed))


def block_digest(parent: bytes, tokens: Sequence[int], extra_keys: ExtraKeys) -> bytes:
    return sha256_cbor((parent, tuple(tokens), extra_keys))


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
