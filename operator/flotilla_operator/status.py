"""Pure status logic: a ModelDeployment's status and conditions, mirrored from its Deployment.

Conditions follow the Kubernetes conventions (``metav1.Condition``): ``lastTransitionTime`` changes only
when ``status`` flips, so recomputing an unchanged status yields an identical object and the handler can
skip the write. That is what keeps a restarted operator from touching every object it manages.

- ``Available`` — the Deployment has its minimum availability (mirrors the Deployment's condition).
- ``Progressing`` — True while rolling out *and* once the rollout completed (reason NewReplicaSetAvailable),
  as Deployments do; False when the rollout is stuck (ProgressDeadlineExceeded).
- ``Degraded`` — True when the spec cannot be realised (InvalidSpec), the Deployment is missing, the rollout
  is stuck or ReplicaSets fail to create pods.
"""

from __future__ import annotations

from typing import Any

AVAILABLE = "Available"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"


def condition(type_: str, status: bool | None, reason: str, message: str, generation: int) -> dict[str, Any]:
    value = "Unknown" if status is None else ("True" if status else "False")
    return {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def merge_conditions(
    previous: list[dict[str, Any]], updates: list[dict[str, Any]], now: str
) -> list[dict[str, Any]]:
    """``updates`` applied over ``previous`` by type; a transition time moves only when the status flips."""
    by_type = {c.get("type"): c for c in previous}
    out = dict(by_type)
    for new in updates:
        old = by_type.get(new["type"])
        stamp = old.get("lastTransitionTime") if old and old.get("status") == new["status"] else None
        out[new["type"]] = {**new, "lastTransitionTime": stamp or now}
    order = [AVAILABLE, PROGRESSING, DEGRADED]
    return sorted(
        out.values(), key=lambda c: (order.index(c["type"]) if c["type"] in order else 99, c["type"])
    )


def _deployment_condition(deployment: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (deployment.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def deployment_conditions(
    deployment: dict[str, Any] | None, desired: int, generation: int
) -> list[dict[str, Any]]:
    """The three conditions implied by the Deployment (``None`` = the Deployment does not exist)."""
    if deployment is None:
        return [
            condition(
                AVAILABLE, False, "DeploymentMissing", "the engine Deployment does not exist", generation
            ),
            condition(PROGRESSING, True, "Reconciling", "creating the engine Deployment", generation),
            condition(
                DEGRADED, True, "DeploymentMissing", "the engine Deployment does not exist", generation
            ),
        ]
    status = deployment.get("status") or {}
    ready = int(status.get("readyReplicas") or 0)
    available_cond = _deployment_condition(deployment, "Available")
    progressing_cond = _deployment_condition(deployment, "Progressing")
    failure_cond = _deployment_condition(deployment, "ReplicaFailure")
    message = f"{ready}/{desired} engine pods ready"

    if desired == 0:
        available = condition(AVAILABLE, True, "ScaledToZero", "no engine pods requested", generation)
    elif available_cond is None:
        available = condition(AVAILABLE, False, "Pending", message, generation)
    else:
        is_up = available_cond.get("status") == "True"
        available = condition(
            AVAILABLE, is_up, available_cond.get("reason") or "Mirrored", message, generation
        )

    stuck = progressing_cond is not None and progressing_cond.get("status") == "False"
    if progressing_cond is not None and stuck:
        progressing = condition(
            PROGRESSING, False, progressing_cond.get("reason") or "Stuck", progressing_cond.get("message", ""),
            generation,
        )  # fmt: skip
    elif progressing_cond is not None:
        progressing = condition(
            PROGRESSING, True, progressing_cond.get("reason") or "Progressing", message, generation
        )
    else:
        progressing = condition(PROGRESSING, True, "Reconciling", message, generation)

    if failure_cond is not None and failure_cond.get("status") == "True":
        reason = failure_cond.get("reason") or "ReplicaFailure"
        degraded = condition(DEGRADED, True, reason, failure_cond.get("message", ""), generation)
    elif stuck:
        degraded = condition(DEGRADED, True, "RolloutStuck", progressing["message"], generation)
    else:
        degraded = condition(DEGRADED, False, "AsExpected", "", generation)
    return [available, progressing, degraded]


def mirror(
    *,
    md: dict[str, Any],
    deployment: dict[str, Any] | None,
    served_model_name: str,
    selector: str,
    now: str,
    observed_generation: int | None = None,
) -> dict[str, Any]:
    """The MD status fields implied by its Deployment, keeping condition transition times.

    ``observed_generation`` is set only by the reconcile handler, which knows which generation it applied;
    the Deployment watcher passes None and leaves the field alone (its view of the MD may be a little stale,
    and a stale generation must never overwrite a newer one).
    """
    previous = md.get("status") or {}
    generation = int((md.get("metadata") or {}).get("generation") or 0)
    desired = int((md.get("spec") or {}).get("replicas") or 0)
    dstatus = (deployment or {}).get("status") or {}
    implied = deployment_conditions(deployment, desired, generation)
    if observed_generation is None:
        # the Deployment watcher must not clear a failure of the last reconciliation: only a reconciliation
        # that succeeds (which passes observed_generation) knows the failure is gone
        failed = [
            c for c in previous.get("conditions") or []
            if c.get("type") == DEGRADED and c.get("status") == "True" and c.get("reason") in RECONCILE_FAILURES
        ]  # fmt: skip
        if failed:
            implied = [c for c in implied if c["type"] != DEGRADED]
    conditions = merge_conditions(previous.get("conditions") or [], implied, now)
    out: dict[str, Any] = {
        "replicas": int(dstatus.get("replicas") or 0),
        "readyReplicas": int(dstatus.get("readyReplicas") or 0),
        "updatedReplicas": int(dstatus.get("updatedReplicas") or 0),
        "selector": selector,
        "servedModelName": served_model_name,
        "conditions": conditions,
    }
    if observed_generation is not None:
        out["observedGeneration"] = observed_generation
    return out


#: Degraded reasons only the reconcile handler sets and clears (the Deployment says nothing about them)
RECONCILE_FAILURES = ("InvalidSpec", "Forbidden")


def invalid(md: dict[str, Any], message: str, now: str, *, reason: str = "InvalidSpec") -> dict[str, Any]:
    """Status fields for a spec the operator refuses (``InvalidSpec``) or may not realise (``Forbidden``):
    Degraded=True for this generation."""
    previous = md.get("status") or {}
    generation = int((md.get("metadata") or {}).get("generation") or 0)
    update = condition(DEGRADED, True, reason, message, generation)
    return {
        "observedGeneration": generation,
        "conditions": merge_conditions(previous.get("conditions") or [], [update], now),
    }


def unchanged(current: dict[str, Any] | None, update: dict[str, Any]) -> bool:
    """True when merge-patching ``update`` onto ``current`` would change nothing."""
    current = current or {}
    return all(current.get(key) == value for key, value in update.items())
