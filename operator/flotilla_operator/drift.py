"""Drift detection: does a live object still carry every field Flotilla applied?

The comparison is a subset check: the live object may have more (defaults, other managers' fields, status),
but every field in the apply configuration must be present with the same value. A false "drifted" only costs
one no-op server-side apply, which the API server answers without writing; a missed drift is what would hurt.
"""

from __future__ import annotations

from typing import Any


def contains(live: Any, desired: Any) -> bool:
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(k in live and contains(live[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(contains(a, b) for a, b in zip(live, desired, strict=True))
        )
    return bool(live == desired)
