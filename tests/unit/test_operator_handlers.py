"""The handlers' contract with kopf, with an in-memory API (no cluster): what they write, how errors map to
kopf's retry types, and that status mirroring reads the API rather than the handlers' stale snapshots."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import kopf
import pytest

from flotilla_operator import builders, handlers, status
from flotilla_operator.errors import Forbidden, Rejected, Unavailable
from flotilla_operator.handlers import State


class FakeKube:
    """Objects by (kind, name); records writes. ``fail`` makes apply raise."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.applied: list[str] = []
        self.statuses: list[dict[str, Any]] = []
        self.events: list[tuple[str, str]] = []
        self.reads: list[str] = []
        self.fail = fail
        #: called on every read; its results land in ``probed``
        self.probe: Callable[[], bool] | None = None
        self.probed: list[tuple[str, bool]] = []

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append(kind)
        if self.probe is not None:
            self.probed.append((kind, self.probe()))
        return copy.deepcopy(self.objects.get((kind, name)))

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        if self.fail is not None:
            raise self.fail
        self.applied.append(manifest["kind"])
        live = {**copy.deepcopy(manifest), "status": {}}
        self.objects[(manifest["kind"], manifest["metadata"]["name"])] = live
        return live

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        self.applied.append(f"-{kind}")
        return self.objects.pop((kind, name), None) is not None

    def patch_md_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.statuses.append(status)
        if self.probe is not None:
            self.probed.append(("patch", self.probe()))
        md = self.objects[("ModelDeployment", name)]
        md["status"] = {**(md.get("status") or {}), **copy.deepcopy(status)}
        return copy.deepcopy(md)

    def post_event(
        self, involved: dict[str, Any], *, type_: str, reason: str, message: str, now: str
    ) -> None:
        self.events.append((type_, reason))


SPEC = {"model": "org/m", "replicas": 2, "resources": {"gpus": 0}}


def md_body(spec: dict[str, Any] = SPEC, st: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "md", "namespace": "ns", "uid": "u1", "generation": 3},
        "spec": spec,
        "status": st or {},
    }


def call(kube: FakeKube, spec: dict[str, Any] = SPEC, reason: str = "create") -> None:
    body = md_body(spec)
    kube.objects.setdefault(("ModelDeployment", "md"), copy.deepcopy(body))
    handlers.reconcile(
        body=body, spec=spec, name="md", namespace="ns", uid="u1", meta=body["metadata"], reason=reason,
        memo=State(kube=kube),  # type: ignore[arg-type]
    )  # fmt: skip


def test_create_applies_both_children_and_reports_the_generation() -> None:
    kube = FakeKube()
    call(kube)
    assert kube.applied == ["Deployment", "Service", "NetworkPolicy"]
    assert kube.statuses[-1]["observedGeneration"] == 3
    assert kube.statuses[-1]["selector"] == builders.selector_string("md")
    assert kube.events == [("Normal", "Created")]


def test_switching_the_network_policy_off_deletes_it_and_leaves_a_foreign_one_alone() -> None:
    kube = FakeKube()
    call(kube)
    kube.applied.clear()
    off = {**SPEC, "networkPolicy": {"enabled": False}}
    call(kube, spec=off, reason="update")
    assert kube.applied == ["-NetworkPolicy"]
    assert ("Normal", "Deleted") in kube.events
    kube.objects[("NetworkPolicy", "md")] = {"metadata": {"name": "md", "ownerReferences": []}}
    kube.applied.clear()
    call(kube, spec=off, reason="update")
    assert kube.applied == []  # the user's own policy of the same name is not ours to delete


def test_resume_with_children_in_place_writes_nothing_to_them() -> None:
    kube = FakeKube()
    call(kube)
    kube.applied.clear()
    kube.events.clear()
    call(kube, reason="resume")
    assert kube.applied == []
    assert kube.events == []


ERRORS = [
    pytest.param(
        Unavailable("503", status=503, retry_after=7), kopf.TemporaryError, id="unavailable-retries"
    ),
    pytest.param(Rejected("422 invalid", status=422), kopf.PermanentError, id="rejected-is-permanent"),
]


@pytest.mark.parametrize(("error", "expected"), ERRORS)
def test_errors_map_to_kopf_retry_types(error: Exception, expected: type[Exception]) -> None:
    kube = FakeKube(fail=error)
    with pytest.raises(expected) as info:
        call(kube)
    if isinstance(info.value, kopf.TemporaryError):
        assert info.value.delay == 7
    else:
        assert ("Warning", "InvalidSpec") in kube.events
        degraded = next(c for c in kube.statuses[-1]["conditions"] if c["type"] == "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "InvalidSpec")


def test_a_missing_rbac_verb_is_degraded_forbidden_and_retried() -> None:
    """A 403 is the operator's RBAC, not the user's spec: reported, and retried until a verb is granted."""
    kube = FakeKube(fail=Forbidden("403 networkpolicies is forbidden", status=403))
    with pytest.raises(kopf.TemporaryError) as info:
        call(kube)
    assert info.value.delay == 30
    assert ("Warning", "Forbidden") in kube.events
    degraded = next(c for c in kube.statuses[-1]["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "Forbidden")
    assert "networkpolicies" in degraded["message"]


def test_reserved_label_override_is_a_permanent_error_without_writes() -> None:
    kube = FakeKube()
    with pytest.raises(kopf.PermanentError, match="reserved"):
        call(kube, {**SPEC, "podTemplate": {"metadata": {"labels": {"flotilla.dev/model": "x"}}}})
    assert kube.applied == []
    assert kube.events == [("Warning", "InvalidSpec")]


def test_public_surface_is_pinned() -> None:
    import flotilla_operator

    assert flotilla_operator.__all__ == [
        "OperatorConfig", "create_registry", "deployment", "engine_args", "operator", "run", "service",
    ]  # fmt: skip


def dep_status(ready: int) -> dict[str, Any]:
    cond = {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": ""}
    return {"replicas": ready, "readyReplicas": ready, "updatedReplicas": ready, "conditions": [cond]}


def md_status(ready: int) -> dict[str, Any]:
    """The status the operator writes for a Deployment with ``dep_status(ready)`` (2 replicas wanted)."""
    return status.mirror(
        md=md_body(), deployment={"status": dep_status(ready)}, served_model_name="org/m",
        selector=builders.selector_string("md"), now="2026-01-01T00:00:00Z",
    )  # fmt: skip


# (kopf's indexed MD status, the MD status the API holds, the event's Deployment, the API's Deployment)
STALE = [
    pytest.param(
        md_status(2), md_status(4), dep_status(2), dep_status(2), 2,
        id="index-lags-behind-own-write",  # the e2e flake: stuck at 4/2 after a reverted scale edit
    ),
    pytest.param(
        md_status(2), md_status(2), dep_status(4), dep_status(2), None,
        id="stale-deployment-snapshot-does-not-regress",  # e.g. a slow handler of an older event or uid
    ),
    pytest.param(md_status(2), md_status(2), dep_status(2), dep_status(2), None, id="steady-writes-nothing"),
]  # fmt: skip


@pytest.mark.parametrize(("indexed", "stored", "event_dep", "live_dep", "written"), STALE)
def test_deployment_event_mirrors_the_api_state_not_the_handler_snapshots(
    indexed: dict[str, Any], stored: dict[str, Any], event_dep: dict[str, Any], live_dep: dict[str, Any],
    written: int | None,
) -> None:  # fmt: skip
    kube = FakeKube()
    manifest = builders.deployment("md", "ns", "u1", handlers._parse(SPEC))
    kube.objects[("ModelDeployment", "md")] = md_body(st=stored)
    kube.objects[("Deployment", "md")] = {**copy.deepcopy(manifest), "status": live_dep}
    body = {**copy.deepcopy(manifest), "status": event_dep}
    body["metadata"]["uid"] = "d1"
    handlers.child_event(
        event={"type": "MODIFIED", "object": body}, body=kopf.Body(body), namespace="ns",
        memo=State(kube=kube), logger=logging.getLogger("test"),  # type: ignore[arg-type]
        index_md={("ns", "md"): [md_body(st=indexed)]},
    )  # fmt: skip
    assert kube.applied == []  # no drift in any case
    assert [s["readyReplicas"] for s in kube.statuses] == ([] if written is None else [written])
    assert kube.objects[("ModelDeployment", "md")]["status"]["readyReplicas"] == (written or 2)


def test_status_reads_and_write_happen_under_the_owners_lock() -> None:
    """Serialised per ModelDeployment: a slower handler cannot write an older Deployment's state last."""
    kube = FakeKube()
    state = State(kube=kube)  # type: ignore[arg-type]
    kube.probe = state.status_lock("u1").locked
    kube.objects[("ModelDeployment", "md")] = md_body()
    handlers.mirror_status(state, md_body(), handlers._parse(SPEC), observed_generation=3)
    assert kube.probed == [("ModelDeployment", True), ("Deployment", True), ("patch", True)]
    assert not state.status_lock("u1").locked()
