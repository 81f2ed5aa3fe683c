"""Standalone discovery: engine URLs from the command line, the settings, or a YAML file.

YAML format::

    engines:
      - http://127.0.0.1:8001                      # a bare URL
      - url: http://127.0.0.1:8002
        model: llama-3-8b                          # optional; otherwise learned from /v1/models
        kv_events: tcp://127.0.0.1:5557            # optional; precise prefix mode
        gpu_type: l4                               # optional; size-aware routing (--routing-plan)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gateway.endpoints import EndpointSpec


def _normalise(url: str) -> str:
    url = url.strip().rstrip("/")
    return url if url.startswith(("http://", "https://")) else "http://" + url


def parse_engines(data: Any) -> list[EndpointSpec]:
    entries = data.get("engines") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise ValueError("engines file: expected a list under 'engines'")
    out = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            out.append(EndpointSpec(url=_normalise(entry)))
        elif isinstance(entry, dict) and isinstance(entry.get("url"), str):
            unknown = set(entry) - {"url", "model", "kv_events", "gpu_type"}
            if unknown:
                raise ValueError(f"engines file: entry {i} has unknown keys {sorted(unknown)}")
            out.append(
                EndpointSpec(
                    url=_normalise(entry["url"]),
                    model=entry.get("model"),
                    kv_events=entry.get("kv_events"),
                    gpu_type=entry.get("gpu_type"),
                )
            )
        else:
            raise ValueError(f"engines file: entry {i} needs a URL string or a mapping with 'url'")
    return out


def load_engines_file(path: Path) -> list[EndpointSpec]:
    try:
        return parse_engines(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read engines file {path}: {exc}") from exc


def static_specs(
    engines: list[str], engines_file: Path | None, kv_events: list[str] | None = None
) -> list[EndpointSpec]:
    """Specs from ``engines`` (with ``kv_events`` publisher URLs paired by position) and the YAML file."""
    kv: list[str | None] = list(kv_events or [])
    if len(kv) > len(engines):
        raise ValueError("more kv_events URLs than engines (they pair by position)")
    kv += [None] * (len(engines) - len(kv))
    specs = [EndpointSpec(url=_normalise(u), kv_events=k) for u, k in zip(engines, kv, strict=True)]
    if engines_file is not None:
        specs += load_engines_file(engines_file)
    seen: dict[str, EndpointSpec] = {}
    for spec in specs:
        seen[spec.key] = spec
    return list(seen.values())
