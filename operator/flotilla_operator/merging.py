"""Merging user pod-template overrides over the generated pod template.

Kubernetes' strategic merge patch is the model: maps merge recursively, lists of named objects (containers,
volumes, env, ports, volumeMounts) merge element-wise by ``name``, any other list is replaced. Implemented
here in a few lines instead of pulling the apiserver's logic in, because overrides are small and the rules
above are the ones users expect from ``kubectl patch``.
"""

from __future__ import annotations

import copy
from typing import Any


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) and "name" in i for i in items)


def merge(base: Any, override: Any) -> Any:
    """``override`` merged over ``base`` (neither is modified)."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(override, list) and _named(base) and _named(override):
        merged = {item["name"]: item for item in base}
        order = [item["name"] for item in base]
        for item in override:
            name = item["name"]
            if name in merged:
                merged[name] = merge(merged[name], item)
            else:
                merged[name] = copy.deepcopy(item)
                order.append(name)
        return [merged[name] for name in order]
    return copy.deepcopy(override)
