"""Size-aware routing: smooth weighted round-robin over a plan's shares, the gpu-plan filter and its fallback,
and where plans come from (ModelGroup status, a ``flotilla optimize --json`` file)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from gateway.discovery.kube import pod_to_spec
from gateway.discovery.plans import load_plan_file, plans_from_groups
from gateway.discovery.static import parse_engines
from gateway.routing import Router, RoutingRequest
from gateway.routing.plans import RoutingPlans, parse_plan
from gateway.routing.plugins.gpu_plan import GpuPlan
from tests.unit.gateway.support import ep

# input buckets ≤64, ≤4096; one output bucket ≤256. Short prompts: l4 3/4, a100 1/4; long: a100 only.
PLAN = parse_plan([64, 4096], [256], {"l4": [[0.75], [0.0]], "a100": [[0.25], [1.0]]})


def plans() -> RoutingPlans:
    out = RoutingPlans()
    out.replace({"m": PLAN})
    return out


def test_swrr_gives_exact_shares_interleaved() -> None:
    p = plans()
    picks = [p.choose("m", 10, 100) for _ in range(8)]
    assert Counter(picks) == {"l4": 6, "a100": 2}
    assert picks[:4].count("a100") == 1  # interleaved, not a burst of one type
    assert {p.choose("m", 3000, 100) for _ in range(5)} == {"a100"}
    assert p.choose("m", 999_999, 100_000) == "a100"  # beyond the last bound: the last bucket
    assert p.choose("other", 10, 10) is None


def test_swrr_restricted_to_usable_types_and_reset_when_the_plan_changes() -> None:
    p = plans()
    assert {p.choose("m", 10, 100, {"a100"}) for _ in range(4)} == {"a100"}
    assert p.choose("m", 3000, 100, {"l4"}) is None  # planned type has nothing usable here
    p.replace({"m": parse_plan([64, 4096], [256], {"l4": [[1.0], [1.0]]})})
    assert p.choose("m", 3000, 100) == "l4"
    p.replace({})
    assert p.choose("m", 10, 100) is None


def _req(prompt: int, max_tokens: int = 100, model: str = "m") -> RoutingRequest:
    return RoutingRequest(model=model, prompt_tokens=prompt, max_tokens=max_tokens)


def test_filter_keeps_the_planned_type_and_falls_back_to_every_candidate() -> None:
    f = GpuPlan(plans())
    l4, a100, untyped = ep(1, gpu_type="l4"), ep(2, gpu_type="a100"), ep(3)
    everything = [l4, a100, untyped]
    assert f.filter(_req(3000), everything) == [a100]
    assert Counter(f.filter(_req(10), everything)[0].spec.gpu_type for _ in range(4)) == {"l4": 3, "a100": 1}
    # the planned type has no endpoint here (scaling up from zero): nothing kept, the router keeps all
    assert f.filter(_req(3000), [l4, untyped]) == []
    # saturated (its engine queues >= max_waiting): same fallback
    busy = ep(4, gpu_type="a100", waiting=4)
    assert f.filter(_req(3000), [l4, busy]) == []
    assert GpuPlan(plans(), max_waiting=10).filter(_req(3000), [l4, busy]) == [busy]
    # models without a plan pass through untouched
    assert f.filter(_req(3000, model="other"), everything) == everything


async def test_router_applies_the_plan_in_every_builtin_profile_and_keeps_the_rest_for_retries() -> None:
    router = Router()
    router.plans.replace({"m": PLAN})
    l4, a100 = ep(1, gpu_type="l4"), ep(2, gpu_type="a100")

    async def no_match(kind, hashes, keys):  # type: ignore[no-untyped-def]
        return {}

    for name, profile in router.profiles.items():
        decision = await router.route(profile, _req(3000), [l4, a100], no_match)
        assert decision.ranked == [a100, l4], name


def test_plans_from_groups_reads_status_and_skips_groups_without_a_valid_plan() -> None:
    plan = {"inputBounds": [64, 4096], "outputBounds": [256],
            "split": [{"gpuType": "l4", "shares": [[1.0], [0.0]]}, {"gpuType": "a100", "shares": [[0.0], [1.0]]}]}  # fmt: skip
    groups = {
        "ns/a": {"spec": {"model": "m"}, "status": {"plan": plan}},
        "ns/b": {"spec": {"model": "n"}, "status": {}},
        "ns/c": {"spec": {"model": "o"}, "status": {"plan": {**plan, "outputBounds": [256, 1024]}}},
    }
    found = plans_from_groups(groups)
    assert list(found) == ["m"]
    assert found["m"].weights(1, 0) == [("a100", 1.0)]


def test_plan_file_is_the_optimize_json_and_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    good = tmp_path / "plan.json"
    good.write_text(json.dumps({"model": "m", "input_bounds": [64], "output_bounds": [256],
                                "split": {"l4": [[1.0]]}, "counts": {"l4": 1}}))  # fmt: skip
    assert load_plan_file(good)["m"].weights(0, 0) == [("l4", 1.0)]
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"model": "m", "input_bounds": [64], "output_bounds": [256], "split": {"l4": [[1, 2]]}})
    )
    with pytest.raises(ValueError, match="do not fit"):
        load_plan_file(bad)
    bad.write_text("[{}]")
    with pytest.raises(ValueError, match="needs 'model'"):
        load_plan_file(bad)


def test_gpu_type_comes_from_the_pod_label_or_the_engines_file() -> None:
    pod = {
        "metadata": {"labels": {"flotilla.dev/model": "m", "flotilla.dev/gpu-type": "l4"}, "annotations": {}},
        "status": {
            "phase": "Running",
            "podIP": "127.0.0.5",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    spec = pod_to_spec(pod)
    assert spec is not None
    assert spec.gpu_type == "l4"
    engines = parse_engines({"engines": [{"url": "127.0.0.1:9", "gpu_type": "a100"}]})
    assert engines[0].gpu_type == "a100"
