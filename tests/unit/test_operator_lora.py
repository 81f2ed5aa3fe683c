"""The LoRA controller's pure parts: status and conditions from a pass, pods → engines, spec → wishes."""

from __future__ import annotations

from typing import Any

import pytest

from flotilla import labels
from flotilla_operator import lora, lora_status
from flotilla_operator.lora_status import Observation

NOW, LATER = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def conditions(st: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in st["conditions"]}


@pytest.mark.parametrize(
    ("obs", "phase", "ready", "degraded"),
    [
        (Observation(2, frozenset({"p0", "p1"})), "Ready", ("True", "Loaded"), ("False", "AsExpected")),
        (Observation(2, frozenset(), loading=True), "Loading", ("False", "Loading"), ("False", "AsExpected")),
        (Observation(2, frozenset()), "Pending", ("False", "Loading"), ("False", "AsExpected")),
        (Observation(3, frozenset({"p0", "p1"}), ("InsufficientCapacity", "2 of 3")), "Degraded",
         ("False", "InsufficientCapacity"), ("True", "InsufficientCapacity")),
        (Observation(1, frozenset(), ("SourceRefused", "No adapter found")), "Failed",
         ("False", "SourceRefused"), ("True", "SourceRefused")),
    ],
    ids=["ready", "loading", "pending", "short", "refused"],
)  # fmt: skip
def test_status_from_a_pass(
    obs: Observation, phase: str, ready: tuple[str, str], degraded: tuple[str, str]
) -> None:
    st = lora_status.build(None, obs, 3, NOW)
    assert st["phase"] == phase
    assert conditions(st) == {"Ready": ready, "Degraded": degraded}
    assert st["readyReplicas"] == len(obs.loaded_pods)
    assert st["loadedPods"] == sorted(obs.loaded_pods)
    assert st["observedGeneration"] == 3


def test_unchanged_pass_is_identical_and_transition_times_move_only_on_flips() -> None:
    obs = Observation(2, frozenset({"p0"}), loading=True)
    first = lora_status.build(None, obs, 1, NOW)
    again = lora_status.build(first, obs, 1, LATER)
    assert lora_status.unchanged(first, again)
    done = lora_status.build(first, Observation(2, frozenset({"p0", "p1"})), 1, LATER)
    times = {c["type"]: c["lastTransitionTime"] for c in done["conditions"]}
    assert times == {"Ready": LATER, "Degraded": NOW}


def pod(
    name: str, ip: str, *, ready: bool = True, deleting: bool = False, port: str = "8001"
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "annotations": {labels.ENGINE_PORT: port}}
    if deleting:
        meta["deletionTimestamp"] = NOW
    return {
        "metadata": meta,
        "spec": {"nodeName": "n0"},
        "status": {"phase": "Running", "podIP": ip,
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }  # fmt: skip


def test_only_ready_pods_that_are_not_going_are_engines() -> None:
    pods = [pod("b", "127.0.0.2"), pod("a", "::1"), pod("c", "127.0.0.3", ready=False),
            pod("d", "127.0.0.4", deleting=True)]  # fmt: skip
    engines = lora.engine_pods(pods, slots=4)
    assert [(e.name, e.endpoint, e.slots, e.node) for e in engines] == [
        ("a", "http://[::1]:8001", 4, "n0"),
        ("b", "http://127.0.0.2:8001", 4, "n0"),
    ]


def adapter_body(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "sql", "namespace": "ns", "uid": "u"},
            "spec": {"baseModelDeployment": "base", "source": "hf://org/sql", **spec}}  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "deleting", "replicas", "name", "path"),
    [({"replicas": 2}, False, 2, "sql", "org/sql"), ({}, False, 3, "sql", "org/sql"),
     ({"maxReplicas": 2}, False, 2, "sql", "org/sql"), ({"replicas": 2}, True, 0, "sql", "org/sql"),
     ({"adapterName": "sql-v2", "source": "file:///models/sql"}, False, 3, "sql-v2", "/models/sql")],
    ids=["replicas", "every-pod", "capped", "deleting", "adapter-name-and-file"],
)  # fmt: skip
def test_wishes_from_the_spec(
    spec: dict[str, Any], deleting: bool, replicas: int, name: str, path: str
) -> None:
    body = adapter_body(**spec)
    if deleting:
        body["metadata"]["deletionTimestamp"] = NOW
    want = lora._wanted(body, ready_pods=3)
    assert want is not None
    assert (want.name, want.replicas, want.path) == (name, replicas, path)


@pytest.mark.parametrize(("lora_spec", "slots"), [({"maxLoras": 2}, 2), ({"maxLoras": 2, "maxCpuLoras": 6}, 2)],
                         ids=["gpu-slots", "cpu-cache"])  # fmt: skip
def test_adapter_slots(lora_spec: dict[str, Any], slots: int) -> None:
    from flotilla.crds import ModelDeploymentSpec

    spec = ModelDeploymentSpec.model_validate({"model": "m", "lora": {"enabled": True, **lora_spec}})
    assert lora.adapter_slots(spec) == slots
