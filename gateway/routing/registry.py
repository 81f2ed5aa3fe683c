"""The one explicit registry of routing plugins, and the built-in profiles (strategies) made from them.

A plugin factory takes the plugin's parameters (floats, from the profile's ``params``) and the gateway's
prefix mode; unknown parameters are a configuration error, not silently ignored.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from gateway.routing.plans import RoutingPlans
from gateway.routing.plugins.gpu_plan import GpuPlan
from gateway.routing.plugins.imbalance import Imbalance
from gateway.routing.plugins.kv_cost import KVCost
from gateway.routing.plugins.kv_usage import KVUsage
from gateway.routing.plugins.least_request import LeastRequest
from gateway.routing.plugins.lora_affinity import LoraAffinity
from gateway.routing.plugins.pickers import MaxScore, PowerOfTwo, RandomPicker, RoundRobin
from gateway.routing.plugins.prefix_match import PrefixMatch
from gateway.routing.plugins.session_affinity import SessionAffinity
from gateway.routing.plugins.ttft_cost import TTFTCost
from gateway.settings import ProfileConfig

Factory = Callable[..., Any]

FILTERS: dict[str, Factory] = {
    "imbalance": Imbalance,
    # the GPU optimizer's size -> GPU type split (a no-op for models without a ModelGroup plan)
    "gpu-plan": GpuPlan,
}

SCORERS: dict[str, Factory] = {
    "least-request": LeastRequest,
    "kv-usage": KVUsage,
    "prefix-cache": lambda: PrefixMatch("approximate"),
    "precise-prefix": lambda: PrefixMatch("precise"),
    "session-affinity": SessionAffinity,
    "lora-affinity": LoraAffinity,
    # the cost model reads whichever index the gateway runs (approximate or precise)
    "kv-cost": KVCost,
    "ttft-cost": TTFTCost,
}

PICKERS: dict[str, Factory] = {
    "max-score": MaxScore,
    "random": RandomPicker,
    "round-robin": RoundRobin,
    "power-of-two": PowerOfTwo,
}

#: every built-in profile first applies a model's GPU plan, if it has one (see plugins/gpu_plan.py)
_PLAN = ["gpu-plan"]

#: strategy name (x-routing-strategy) -> profile
BUILTIN_PROFILES: dict[str, ProfileConfig] = {
    "default": ProfileConfig(filters=_PLAN, scorers={"ttft-cost": 1.0, "lora-affinity": 0.2}),
    # the default until 2026-11: load as KV blocks held (spreads a shared prompt too eagerly; kept to compare)
    "kv-cost": ProfileConfig(filters=_PLAN, scorers={"kv-cost": 1.0, "lora-affinity": 0.2}),
    "random": ProfileConfig(filters=_PLAN, picker="random"),
    "round-robin": ProfileConfig(filters=_PLAN, picker="round-robin"),
    "least-request": ProfileConfig(filters=_PLAN, scorers={"least-request": 1.0}),
    "least-kv-usage": ProfileConfig(filters=_PLAN, scorers={"kv-usage": 1.0, "least-request": 0.01}),
    "power-of-two": ProfileConfig(filters=_PLAN, picker="power-of-two"),
    "session-affinity": ProfileConfig(filters=_PLAN, scorers={"session-affinity": 1.0, "least-request": 0.1}),
    "prefix-cache": ProfileConfig(
        filters=[*_PLAN, "imbalance"], scorers={"prefix-cache": 1.0, "least-request": 0.01}
    ),
    "precise-prefix": ProfileConfig(
        filters=[*_PLAN, "imbalance"], scorers={"precise-prefix": 1.0, "least-request": 0.01}
    ),
    "lora-affinity": ProfileConfig(filters=_PLAN, scorers={"lora-affinity": 1.0, "least-request": 0.5}),
}


def build(
    kind: dict[str, Factory],
    name: str,
    params: dict[str, float],
    prefix_mode: str,
    plans: RoutingPlans | None = None,
) -> Any:
    """A plugin from its factory; ``mode`` (the prefix mode) and ``plans`` (the gateway's routing plans) are
    handed to the factories that take them, never set from a profile's params."""
    try:
        factory = kind[name]
    except KeyError:
        raise ValueError(f"unknown routing plugin {name!r}; known: {', '.join(sorted(kind))}") from None
    target = factory.__init__ if isinstance(factory, type) else factory  # type: ignore[misc]
    accepted = set(inspect.signature(target).parameters) - {"self", "rng", "plans"}
    unknown = set(params) - accepted
    if unknown:
        raise ValueError(f"routing plugin {name!r} has no parameter(s) {sorted(unknown)}")
    kwargs: dict[str, Any] = dict(params)
    if "mode" in accepted:
        kwargs["mode"] = prefix_mode
    if "plans" in inspect.signature(target).parameters:
        kwargs["plans"] = plans if plans is not None else RoutingPlans()
    return factory(**kwargs)
