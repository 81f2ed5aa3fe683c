"""Status mirroring: conditions from the Deployment, stable transition times, no needless writes."""

from __future__ import annotations

from typing import Any

import pytest

from flotilla_operator import status

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def deployment(ready: int, *conds: tuple[str, str, str]) -> dict[str, Any]:
    return {
        "status": {
            "replicas": ready,
            "readyReplicas": ready,
            "updatedReplicas": ready,
            "conditions": [{"type": t, "status": s, "reason": r, "message": ""} for t, s, r in conds],
        }
    }


CASES = [
    pytest.param(None, 2, {"Available": "False", "Progressing": "True", "Degraded": "True"}, id="missing"),
    pytest.param(deployment(0), 2, {"Available": "False", "Progressing": "True", "Degraded": "False"}, id="new"),
    pytest.param(
        deployment(2, ("Available", "True", "MinimumReplicasAvailable"), ("Progressing", "True", "NewReplicaSetAvailable")),
        2, {"Available": "True", "Progressing": "True", "Degraded": "False"}, id="complete",
    ),
    pytest.param(
        deployment(1, ("Available", "False", "MinimumReplicasUnavailable"), ("Progressing", "False", "ProgressDeadlineExceeded")),
        2, {"Available": "False", "Progressing": "False", "Degraded": "True"}, id="stuck",
    ),
    pytest.param(
        deployment(0, ("Available", "True", "MinimumReplicasAvailable"), ("ReplicaFailure", "True", "FailedCreate")),
        2, {"Available": "True", "Progressing": "True", "Degraded": "True"}, id="replica-failure",
    ),
    pytest.param(deployment(0), 0, {"Available": "True", "Progressing": "True", "Degraded": "False"}, id="scaled-to-zero"),
]  # fmt: skip


@pytest.mark.parametrize(("dep", "desired", "expected"), CASES)
def test_conditions(dep: dict[str, Any] | None, desired: int, expected: dict[str, str]) -> None:
    conds = status.deployment_conditions(dep, desired, generation=3)
    assert {c["type"]: c["status"] for c in conds} == expected
    assert {c["observedGeneration"] for c in conds} == {3}


def md(generation: int = 1, replicas: int = 2, st: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"generation": generation}, "spec": {"replicas": replicas}, "status": st or {}}


def test_transition_time_moves_only_when_status_flips() -> None:
    done = deployment(2, ("Available", "True", "MinimumReplicasAvailable"))
    first = status.mirror(md=md(), deployment=done, served_model_name="m", selector="s", now=T0)
    again = status.mirror(md=md(st=first), deployment=done, served_model_name="m", selector="s", now=T1)
    assert again == first
    assert status.unchanged(first, again)
    down = status.mirror(
        md=md(st=first), deployment=deployment(0), served_model_name="m", selector="s", now=T1
    )
    times = {c["type"]: c["lastTransitionTime"] for c in down["conditions"]}
    assert times == {"Available": T1, "Progressing": T0, "Degraded": T0}


def test_observed_generation_only_when_given() -> None:
    without = status.mirror(md=md(), deployment=None, served_model_name="m", selector="s", now=T0)
    assert "observedGeneration" not in without
    given = status.mirror(
        md=md(), deployment=None, served_model_name="m", selector="s", now=T0, observed_generation=4
    )
    assert given["observedGeneration"] == 4


def test_invalid_spec_is_degraded_for_this_generation() -> None:
    out = status.invalid(md(generation=7), "bad labels", T0)
    degraded = next(c for c in out["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"], degraded["observedGeneration"]) == (
        "True",
        "InvalidSpec",
        7,
    )
    assert out["observedGeneration"] == 7


@pytest.mark.parametrize("reason", ["InvalidSpec", "Forbidden"])
def test_the_deployment_watcher_keeps_a_reconcile_failure_only_reconcile_clears_it(reason: str) -> None:
    """A Deployment that becomes Available says nothing about a refused spec or a missing RBAC verb: the
    watcher's mirror keeps Degraded; the next successful reconciliation (observed_generation given) clears it."""
    failed = status.invalid(md(generation=3), "no", T0, reason=reason)
    body = {**md(generation=3), "status": failed}
    ok = deployment(2, ("Available", "True", "MinimumReplicasAvailable"))
    watched = status.mirror(md=body, deployment=ok, served_model_name="m", selector="s", now=T1)
    conds = {c["type"]: c for c in watched["conditions"]}
    assert (conds["Degraded"]["status"], conds["Degraded"]["reason"]) == ("True", reason)
    assert conds["Available"]["status"] == "True"
    fixed = status.mirror(
        md=body, deployment=ok, served_model_name="m", selector="s", now=T1, observed_generation=3
    )
    assert next(c for c in fixed["conditions"] if c["type"] == "Degraded")["status"] == "False"
