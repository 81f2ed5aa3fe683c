"""The one place scaling policies are registered by name (the CRD's ``spec.algorithm``)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from autoscaler.apa import APA
from autoscaler.kpa import KPA
from autoscaler.policy import ScalingPolicy

__all__ = ["POLICIES", "policy_named"]

POLICIES: Mapping[str, ScalingPolicy] = MappingProxyType({"KPA": KPA(), "APA": APA()})


def policy_named(name: str) -> ScalingPolicy:
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown scaling algorithm {name!r}; known: {', '.join(POLICIES)}") from None
