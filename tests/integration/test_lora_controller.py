"""The operator's LoRA controller against real engine_sim processes, with kopf's indexes as plain mappings and an
in-memory API for status and events: placement, events, coalescing of concurrent triggers, and the finalizer."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from flotilla import labels
from flotilla_operator import lora, lora_handlers
from flotilla_operator.handlers import State
from lora_manager import EngineClient
from tests.fleet import SimFleet, sim_fleet

pytestmark = pytest.mark.timeout(90)
KEY = ("ns", "base")


class FakeKube:
    def __init__(self) -> None:
        self.statuses: dict[str, list[dict[str, Any]]] = {}
        self.events: list[tuple[str, str, str]] = []

    def patch_lora_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.statuses.setdefault(name, []).append(copy.deepcopy(status))
        return {}

    def post_event(
        self, involved: dict[str, Any], *, type_: str, reason: str, message: str, now: str
    ) -> None:
        self.events.append((involved["metadata"]["name"], reason, message))


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    args = ["--time-scale", "0.05", "--enable-lora", "--max-loras", "2", "--lora-load-latency", "0.2"]
    with sim_fleet(3, extra_args=args) as f:
        yield f


def indexes(fleet: SimFleet, adapters: list[dict[str, Any]], max_loras: int = 2) -> dict[str, Any]:
    md = {"metadata": {"name": "base", "namespace": "ns"},
          "spec": {"model": "m", "lora": {"enabled": True, "maxLoras": max_loras}}}  # fmt: skip
    pods = [
        {"metadata": {"name": f"pod-{i}", "annotations": {labels.ENGINE_PORT: url.rsplit(":", 1)[1]}},
         "spec": {"nodeName": "n"},
         "status": {"phase": "Running", "podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}}
        for i, url in enumerate(fleet.urls)
    ]  # fmt: skip
    return {"index_md": {KEY: [md]}, "index_lora": {KEY: adapters}, "index_lora_pods": {KEY: pods}}


def adapter(name: str, replicas: int, **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "generation": 1, **meta},
            "spec": {"baseModelDeployment": "base", "source": f"hf://org/{name}", "replicas": replicas}}  # fmt: skip


def loaded(fleet: SimFleet) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for i, url in enumerate(fleet.urls):
        for card in httpx.get(url + "/v1/models", timeout=5).json()["data"]:
            if card.get("parent"):
                out.setdefault(card["id"], set()).add(f"pod-{i}")
    return out


async def test_place_coalesce_report_and_unload(fleet: SimFleet) -> None:
    kube = FakeKube()
    state = State(kube=kube)  # type: ignore[arg-type]
    controller = lora.LoraController()
    idx = indexes(fleet, [adapter("sql", 2), adapter("big", 5)])
    try:
        # five triggers at once (pod events, timers, create): one pass, maybe two, never five
        await asyncio.gather(*(controller.reconcile(KEY, state, idx) for _ in range(5)))
        assert controller.passes[KEY] <= 2
        where = loaded(fleet)
        assert len(where["sql"]) == 2
        assert len(where["big"]) == 3  # three pods: three replicas at most, two short
        sql = kube.statuses["sql"][-1]
        assert (sql["phase"], sql["readyReplicas"], sql["loadedPods"]) == ("Ready", 2, sorted(where["sql"]))
        big = kube.statuses["big"][-1]
        assert big["phase"] == "Degraded"
        reasons = {c["type"]: c["reason"] for c in big["conditions"]}
        assert reasons == {"Ready": "InsufficientCapacity", "Degraded": "InsufficientCapacity"}
        assert sorted(m for n, r, m in kube.events if n == "sql" and r == "Loaded") == sorted(
            f"Loaded on pod {p}" for p in where["sql"]
        )
        assert ("big", "InsufficientCapacity") in {(n, r) for n, r, _ in kube.events}
        writes = sum(len(v) for v in kube.statuses.values())
        await controller.reconcile(KEY, state, idx)  # nothing changed: no writes, no events
        assert sum(len(v) for v in kube.statuses.values()) == writes

        # deletion: the finalizer's pass unloads it everywhere and lets go
        deleting = adapter("sql", 2, deletionTimestamp="2026-01-01T00:00:00Z")
        idx = indexes(fleet, [deleting, adapter("big", 5)])
        body: Any = deleting
        await lora_handlers.on_delete(controller, body=_Body(body), namespace="ns", memo=state, **idx)
        assert "sql" not in loaded(fleet)
        assert ("sql", "Unloaded") in {(n, r) for n, r, _ in kube.events}
    finally:
        async with EngineClient() as client:
            for url in fleet.urls:
                for name in await client.adapters(url):
                    await client.unload(url, name)
        await controller.close()


class _Body(dict[str, Any]):
    """The bit of kopf.Body the handlers read (``.spec``)."""

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self["spec"])
