"""The ModelGroup controller's tick against an in-memory API server and a gateway behind httpx's MockTransport:
members are validated, plans are applied through /scale within bounds, autoscaled members are left alone,
and the status carries the plan. Time is injected; nothing sleeps."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from flotilla.sizes import DEFAULT_INPUT_BOUNDS, DEFAULT_OUTPUT_BOUNDS, SIZES_METRIC
from flotilla_operator.autoscaling import AutoscalingOptions
from flotilla_operator.errors import NotFound
from flotilla_operator.grouping import GroupLoop

NS = "team"
BASE = f"/apis/flotilla.dev/v1alpha1/namespaces/{NS}"
SLO = {"ttft": 5.0, "tpot": 0.1, "attainment": 0.99}


def profile(gpu: str, rate: float, max_input: int) -> str:
    max_rate = [
        [rate if i <= max_input else 0.0 for _ in DEFAULT_OUTPUT_BOUNDS] for i in DEFAULT_INPUT_BOUNDS
    ]
    return json.dumps({"gpu": gpu, "input_bounds": list(DEFAULT_INPUT_BOUNDS),
                       "output_bounds": list(DEFAULT_OUTPUT_BOUNDS), "tables": [{"slo": SLO, "max_rate": max_rate}]})  # fmt: skip


class FakeKube:
    """Objects by API path; GET / PATCH (merge of spec.replicas or status) and a log of writes."""

    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        self.objects = objects
        self.writes: list[tuple[str, dict[str, Any]]] = []
        self.events: list[tuple[str, str]] = []

    def request(self, method: str, path: str, *, body: Any = None, **_: Any) -> dict[str, Any]:
        if method == "GET":
            if path not in self.objects:
                raise NotFound(f"GET {path}: 404", status=404)
            return json.loads(json.dumps(self.objects[path]))
        assert method == "PATCH"
        self.writes.append((path, body))
        if path.endswith("/scale"):
            md = self.objects[path.removesuffix("/scale")]
            md["spec"]["replicas"] = body["spec"]["replicas"]
        return {}

    def post_event(
        self, involved: dict[str, Any], *, type_: str, reason: str, message: str, now: str
    ) -> None:
        self.events.append((reason, message))


def md(name: str, gpu: str | None, replicas: int, model: str = "m") -> dict[str, Any]:
    spec: dict[str, Any] = {"model": model, "replicas": replicas, "resources": {"gpus": 0}}
    if gpu:
        spec["gpuType"] = gpu
    return {"metadata": {"name": name}, "spec": spec}


def world(mds: list[dict[str, Any]], autoscalers: list[str] = ()) -> FakeKube:  # type: ignore[assignment]
    objects: dict[str, dict[str, Any]] = {
        f"/api/v1/namespaces/{NS}/configmaps/profiles": {
            "data": {"l4.json": profile("l4", 4.0, 256), "a100.json": profile("a100-80gb", 10.0, 8192)}
        },
        f"{BASE}/modelautoscalers": {"items": [
            {"metadata": {"name": f"mas-{t}"}, "spec": {"scaleTargetRef": {"name": t}}} for t in autoscalers
        ]},
    }  # fmt: skip
    for m in mds:
        objects[f"{BASE}/modeldeployments/{m['metadata']['name']}"] = m
        # the /scale subresource reads through to the object (FakeKube.request copies on GET)
        objects[f"{BASE}/modeldeployments/{m['metadata']['name']}/scale"] = m
    return FakeKube(objects)


def group(members: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "g", "namespace": NS, "generation": 3, "uid": "u"},
        "spec": {"model": "m", "members": members, "slo": {"ttftSeconds": 5, "tpotSeconds": 0.1},
                 "profiles": {"configMapName": "profiles"}, "windowSeconds": 10, "stabilizationSeconds": 0,
                 **spec},
        "status": {},
    }  # fmt: skip


class Gateway:
    """A gateway's /metrics with the size counter the test advances."""

    def __init__(self) -> None:
        self.counts: dict[tuple[int, int], float] = {}

    def handler(self, request: httpx.Request) -> httpx.Response:
        lines = [
            f'{SIZES_METRIC}{{model="m",input_le="{i}",output_le="{o}"}} {v}'
            for (i, o), v in self.counts.items()
        ]
        return httpx.Response(200, text="\n".join(lines) + "\n")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def run(
    kube: FakeKube, body: dict[str, Any], gateway: Gateway, steps: list[dict[tuple[int, int], float]]
):
    clock = Clock()
    options = AutoscalingOptions(gateway_metrics_urls=("http://gw:8080/metrics",), discover_gateways=False)
    async with httpx.AsyncClient(transport=httpx.MockTransport(gateway.handler)) as http:
        loop = GroupLoop(kube, http, options, NS, "g", clock=clock)  # type: ignore[arg-type]
        for counts in steps:
            gateway.counts = counts
            await loop.tick(body)
            statuses = [b["status"] for p, b in kube.writes if p.endswith("modelgroups/g/status")]
            if statuses:
                body["status"] = {**body["status"], **statuses[-1]}
            clock.now += 5.0
    return body["status"]


async def test_short_traffic_plans_l4_and_scales_within_bounds_leaving_autoscaled_members_alone() -> None:
    kube = world([md("on-l4", "l4", 0), md("on-a100", "a100-80gb", 1), md("other", "a10g", 2)],
                 autoscalers=["other"])  # fmt: skip
    body = group([{"name": "on-l4", "maxReplicas": 3}, {"name": "on-a100", "minReplicas": 0},
                  {"name": "other"}], prices={"a10g": 2.0})  # fmt: skip
    # `other` runs on a10g, which has no profile here: the group says so and does nothing
    status = await run(kube, body, Gateway(), [{}])
    planned = next(c for c in status["conditions"] if c["type"] == "Planned")
    assert (planned["status"], planned["reason"]) == ("False", "NoProfile")
    assert kube.events == [("NoProfile", planned["message"])]

    kube.objects[f"/api/v1/namespaces/{NS}/configmaps/profiles"]["data"]["a10g.json"] = profile(
        "a10g", 5.0, 64
    )
    # 100 short requests per 5 s = 20 req/s: 5 L4s (4 req/s each) beat 2 A100s or 4 A10Gs; bounded to 3
    status = await run(kube, body, Gateway(), [{(64, 64): 0.0}, {(64, 64): 100.0}])
    members = {m["name"]: m for m in status["members"]}
    assert {n: (m["plannedReplicas"], m["desiredReplicas"], m["replicas"]) for n, m in members.items()} == {
        "on-l4": (5, 3, 3), "on-a100": (0, 0, 0), "other": (0, 0, 2),
    }  # fmt: skip
    assert members["other"]["scaledBy"] == "ModelAutoscaler/mas-other"
    scaled = {p.split("/")[-2]: b["spec"]["replicas"] for p, b in kube.writes if p.endswith("/scale")}
    assert scaled == {"on-l4": 3, "on-a100": 0}  # never the autoscaled member
    assert status["gpus"] == "a100-80gb=0 a10g=0 l4=5"
    assert status["plan"]["split"] == [{"gpuType": "l4", "shares": [[1.0, 0.0, 0.0]] + [[0.0] * 3] * 4}]
    assert status["observedGeneration"] == 3
    assert ("PlanChanged", "GPUs a100-80gb=0 a10g=0 l4=5 at $4.024/h for 20 req/s") in kube.events


@pytest.mark.parametrize(
    ("mds", "members", "reason"),
    [
        ([], [{"name": "nope"}], "MemberNotFound"),
        ([md("a", None, 1)], [{"name": "a"}], "MissingGpuType"),
        ([md("a", "l4", 1, model="other")], [{"name": "a"}], "ModelMismatch"),
        ([md("a", "l4", 1), md("b", "l4", 1)], [{"name": "a"}, {"name": "b"}], "DuplicateGpuType"),
        ([md("a", "h100-80gb", 1)], [{"name": "a"}], "NoProfile"),
    ],
    ids=["missing", "untyped", "other-model", "same-type", "no-profile"],
)
async def test_bad_members_are_conditions_and_nothing_is_scaled(
    mds: list[dict[str, Any]], members: list[dict[str, Any]], reason: str
) -> None:
    kube = world(mds)
    status = await run(kube, group(members), Gateway(), [{(64, 64): 0.0}, {(64, 64): 10.0}])
    planned = next(c for c in status["conditions"] if c["type"] == "Planned")
    assert (planned["status"], planned["reason"]) == ("False", reason)
    assert not [p for p, _ in kube.writes if p.endswith("/scale")]


async def test_no_traffic_holds_replicas_and_infeasible_is_reported() -> None:
    kube = world([md("on-l4", "l4", 2)])
    status = await run(kube, group([{"name": "on-l4"}]), Gateway(), [{(64, 64): 7.0}, {(64, 64): 7.0}])
    planned = next(c for c in status["conditions"] if c["type"] == "Planned")
    assert (planned["status"], planned["reason"]) == ("Unknown", "NoTraffic")
    # long prompts, and only an L4 (which cannot serve them) in the group
    status = await run(kube, group([{"name": "on-l4"}]), Gateway(), [{(1024, 64): 0.0}, {(1024, 64): 10.0}])
    planned = next(c for c in status["conditions"] if c["type"] == "Planned")
    assert (planned["status"], planned["reason"]) == ("False", "Infeasible")
    assert not [p for p, _ in kube.writes if p.endswith("/scale")]
