"""Pure status of a ``ModelGroup``: the plan in force, per-member replicas and two conditions. No I/O.

* ``Planned`` — True when the last tick solved a plan on fresh data (reason ``Solved``); False with the
  reason that stopped it (``InvalidSpec``, ``MemberNotFound``, ``MissingGpuType``, ``DuplicateGpuType``,
  ``ModelMismatch``, ``ProfilesNotFound``, ``NoProfile``, ``NoPrice``, ``NoGateway``, ``ScrapeFailed``,
  ``Infeasible``, ``InvalidInput``); Unknown (``Observing``) until the window has two scrapes, and
  (``NoTraffic``) while no request finished in the window (replicas are then held: see grouping.py).
* ``Scaled`` — True when every member the group owns has its desired replicas written; False with
  ``FailedUpdateScale`` otherwise.

A problem keeps the previous plan in the status: the gateways go on routing by the last good plan rather
than by none, and replicas stay where they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flotilla_operator.status import condition, merge_conditions

PLANNED = "Planned"
SCALED = "Scaled"


@dataclass(frozen=True, slots=True)
class GroupProblem:
    condition: str
    reason: str
    message: str
    #: True = the condition is Unknown (waiting), not False (broken)
    waiting: bool = False


def _round(value: float) -> float:
    return float(f"{value:.4g}")


def plan_status(
    *,
    input_bounds: tuple[int, ...],
    output_bounds: tuple[int, ...],
    shares: Mapping[str, list[list[float]]],
    rate: float,
    cost: float,
    best_single: float | None,
    now: str,
) -> dict[str, Any]:
    return {
        "inputBounds": list(input_bounds),
        "outputBounds": list(output_bounds),
        "split": [{"gpuType": gpu, "shares": m} for gpu, m in sorted(shares.items())],
        "rate": _round(rate),
        "costPerHour": _round(cost),
        "bestSingleCostPerHour": None if best_single is None else _round(best_single),
        "time": now,
    }


def same_plan(previous: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Equal split and bounds (the rate, cost and time may move without the plan changing)."""
    if not previous:
        return False
    keys = ("inputBounds", "outputBounds", "split")
    return all(previous.get(k) == new.get(k) for k in keys)


def status(
    previous: Mapping[str, Any] | None,
    *,
    generation: int,
    now: str,
    plan: dict[str, Any] | None = None,
    members: list[dict[str, Any]] | None = None,
    gpus: str | None = None,
    cost: float | None = None,
    problem: GroupProblem | None = None,
    scale_error: str | None = None,
) -> dict[str, Any]:
    """The status after one tick: a new plan and members, or a problem (the previous plan stays)."""
    previous = previous or {}
    out: dict[str, Any] = {"observedGeneration": generation}
    if plan is not None:
        if same_plan(previous.get("plan"), plan):
            plan = {**plan, "time": previous["plan"].get("time", plan["time"])}
        out["plan"] = plan
    if members is not None:
        out["members"] = members
    if gpus is not None:
        out["gpus"] = gpus
    if cost is not None:
        out["costPerHour"] = _round(cost)
    updates: list[dict[str, Any]] = []
    if problem is not None:
        value = None if problem.waiting else False
        updates.append(condition(problem.condition, value, problem.reason, problem.message, generation))
    elif plan is not None:
        message = f"{gpus or 'no GPUs'} at ${cost or 0:.4g}/h for {plan['rate']:g} req/s"
        if plan.get("bestSingleCostPerHour") is not None:
            message += f" (cheapest single type: ${plan['bestSingleCostPerHour']:g}/h)"
        updates.append(condition(PLANNED, True, "Solved", message, generation))
        if scale_error is None:
            updates.append(
                condition(SCALED, True, "DesiredReplicas", "members have their replicas", generation)
            )
    if scale_error is not None:
        updates.append(condition(SCALED, False, "FailedUpdateScale", scale_error, generation))
    out["conditions"] = merge_conditions(previous.get("conditions") or [], updates, now)
    return out
