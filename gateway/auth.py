"""API keys: loaded from the environment or a YAML file and kept only as SHA-256 digests.

A presented key is hashed and looked up; the plaintext is never stored, logged or put in a metric label
(logs and limits use the key's ``name``, or the first 8 hex digits of its digest).

YAML format::

    keys:
      - name: team-a
        sha256: 9f86d08...          # or  key: sk-plaintext  (hashed at load)
        rpm: 600                    # optional, overrides the gateway default
        tpm: 200000
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr

from gateway.errors import Unauthorized


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    digest: str
    rpm: int | None = None
    tpm: int | None = None


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _limit(entry: dict[str, Any], field: str, i: int) -> int | None:
    value = entry.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"api keys file: entry {i}: '{field}' must be a positive integer")
    return value


def parse_keys(data: Any) -> list[ApiKey]:
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError("api keys file: expected a list under 'keys'")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"api keys file: entry {i} must be a mapping")
        if isinstance(entry.get("sha256"), str):
            hexdigest = entry["sha256"].lower()
            if len(hexdigest) != 64 or any(c not in "0123456789abcdef" for c in hexdigest):
                raise ValueError(f"api keys file: entry {i}: 'sha256' must be 64 hex digits")
        elif isinstance(entry.get("key"), str) and entry["key"]:
            hexdigest = digest(entry["key"])
        else:
            raise ValueError(f"api keys file: entry {i} needs 'sha256' or 'key'")
        name = str(entry.get("name") or hexdigest[:8])
        out.append(ApiKey(name, hexdigest, _limit(entry, "rpm", i), _limit(entry, "tpm", i)))
    return out


class KeyStore:
    """Authenticates ``Authorization: Bearer <key>``; with no keys configured every request is anonymous."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self._by_digest = {k.digest: k for k in keys}

    @classmethod
    def load(cls, plaintext: list[SecretStr], path: Path | None) -> KeyStore:
        keys = [ApiKey(digest(s.get_secret_value())[:8], digest(s.get_secret_value())) for s in plaintext]
        if path is not None:
            try:
                keys += parse_keys(yaml.safe_load(path.read_text()))
            except (OSError, yaml.YAMLError) as exc:
                raise ValueError(f"cannot read api keys file {path}: {exc}") from exc
        return cls(keys)

    @property
    def enabled(self) -> bool:
        return bool(self._by_digest)

    def authenticate(self, authorization: str | None) -> ApiKey | None:
        if not self._by_digest:
            return None
        if not authorization or not authorization[:7].lower() == "bearer ":
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        presented = digest(authorization[7:].strip())
        found = self._by_digest.get(presented)
        if found is None or not hmac.compare_digest(found.digest, presented):
            raise Unauthorized("invalid API key")
        return found
