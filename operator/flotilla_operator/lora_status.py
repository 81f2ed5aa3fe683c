"""Pure status logic of a LoRAAdapter: what one placement pass means to the user who created it.

Two conditions, each with a reason a user can act on:

- ``Ready`` — True when the adapter is loaded on every desired replica (reason ``Loaded``); otherwise False
  with the first problem below, or ``Loading`` while loads are under way with nothing wrong.
- ``Degraded`` — True when something needs the user: ``BaseModelNotFound`` (no such ModelDeployment),
  ``LoraNotEnabled`` (its ``spec.lora.enabled`` is false), ``NoReadyPods``, ``InsufficientCapacity`` (more
  replicas than pods with a free ``maxLoras`` slot: add pods, raise ``maxLoras`` or lower ``replicas``),
  ``SourceRefused`` (the engine cannot load the source), ``LoraDisabled`` (the engine has no runtime LoRA API)
  and ``EngineError`` (an engine failed or did not answer; retried). False/``AsExpected`` otherwise.

Transition times move only when a status flips (``status.merge_conditions``), so an unchanged pass yields an
identical status and the controller skips the write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flotilla_operator.status import condition, merge_conditions

READY = "Ready"
DEGRADED = "Degraded"


@dataclass(frozen=True)
class Observation:
    """What the controller learned about one adapter in one pass (plain data, built by the handlers)."""

    desired: int
    loaded_pods: frozenset[str]
    #: (reason, message) of the problem that needs the user, if any
    problem: tuple[str, str] | None = None
    loading: bool = False
    #: pods the last plan chose (``status.targetPods``)
    target: frozenset[str] = frozenset()


def phase(obs: Observation) -> str:
    ready = len(obs.loaded_pods)
    if obs.desired and ready >= obs.desired:
        return "Ready"
    if obs.problem is not None:
        return "Degraded" if ready else "Failed"
    return "Loading" if obs.loading or ready else "Pending"


def build(previous: dict[str, Any] | None, obs: Observation, generation: int, now: str) -> dict[str, Any]:
    ready = len(obs.loaded_pods)
    complete = bool(obs.desired) and ready >= obs.desired
    if complete:
        ready_cond = condition(READY, True, "Loaded", f"loaded on {ready} pod(s)", generation)
    elif obs.problem is not None:
        ready_cond = condition(READY, False, obs.problem[0], obs.problem[1], generation)
    else:
        ready_cond = condition(
            READY, False, "Loading", f"loaded on {ready} of {obs.desired} pod(s)", generation
        )
    if obs.problem is not None:
        degraded = condition(DEGRADED, True, obs.problem[0], obs.problem[1], generation)
    else:
        degraded = condition(DEGRADED, False, "AsExpected", "", generation)
    prev = previous or {}
    return {
        "phase": phase(obs),
        "desiredReplicas": obs.desired,
        "readyReplicas": ready,
        "loadedPods": sorted(obs.loaded_pods),
        "targetPods": sorted(obs.target),
        "observedGeneration": generation,
        "conditions": merge_conditions(prev.get("conditions") or [], [ready_cond, degraded], now),
    }


def unchanged(previous: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    return (previous or {}) == new
