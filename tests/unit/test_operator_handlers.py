"""The reconcile handler's contract with kopf, with an in-memory API (no cluster): what it writes, and how
errors map to kopf's retry types."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest

from flotilla_operator import builders, handlers
from flotilla_operator.errors import Rejected, Unavailable
from flotilla_operator.handlers import State


class FakeKube:
    """Objects by (kind, name); records writes. ``fail`` makes apply raise."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.applied: list[str] = []
        self.statuses: list[dict[str, Any]] = []
        self.events: list[tuple[str, str]] = []
        self.fail = fail

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.objects.get((kind, name)))

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        if self.fail is not None:
            raise self.fail
        self.applied.append(manifest["kind"])
        live = {**copy.deepcopy(manifest), "status": {}}
        self.objects[(manifest["kind"], manifest["metadata"]["name"])] = live
        return live

    def patch_md_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.statuses.append(status)
        return {}

    def post_event(
        self, involved: dict[str, Any], *, type_: str, reason: str, message: str, now: str
    ) -> None:
        self.events.append((type_, reason))


SPEC = {"model": "org/m", "replicas": 2, "resources": {"gpus": 0}}


def call(kube: FakeKube, spec: dict[str, Any] = SPEC, reason: str = "create") -> None:
    body = {
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "md", "namespace": "ns", "uid": "u1", "generation": 3},
        "spec": spec,
    }
    handlers.reconcile(
        body=body, spec=spec, name="md", namespace="ns", uid="u1", meta=body["metadata"], reason=reason,
        memo=State(kube=kube),  # type: ignore[arg-type]
    )  # fmt: skip


def test_create_applies_both_children_and_reports_the_generation() -> None:
    kube = FakeKube()
    call(kube)
    assert kube.applied == ["Deployment", "Service"]
    assert kube.statuses[-1]["observedGeneration"] == 3
    assert kube.statuses[-1]["selector"] == builders.selector_string("md")
    assert kube.events == [("Normal", "Created")]


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
