"""LoRA placement: table-driven cases for each rule, and properties over random fleets (hypothesis)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lora_manager.placement import POLICIES, Adapter, Plan, Pod, place


def pods(*spec: str, slots: int = 2) -> list[Pod]:
    return [Pod(name, slots) for name in spec]


def target(plan: Plan) -> dict[str, set[str]]:
    return {a: set(ps) for a, ps in plan.target.items()}


CASES = [
    pytest.param(
        pods("p0", "p1", "p2"), [Adapter("a", 2)], {},
        {"a": {"p0", "p1"}}, {}, id="two-replicas-on-distinct-pods",
    ),
    pytest.param(
        pods("p0", "p1", "p2"), [Adapter("a", 2)], {"p2": ["a"]},
        {"a": {"p2", "p0"}}, {}, id="keeps-the-loaded-copy",
    ),
    pytest.param(
        pods("p0", "p1"), [Adapter("a", 1)], {"p0": ["a"], "p1": ["a"]},
        {"a": {"p0"}}, {}, id="surplus-replica-dropped",
    ),
    pytest.param(
        pods("p0", "p1"), [Adapter("a", 1)], {"gone": ["a"]},
        {"a": {"p0"}}, {}, id="pod-gone-replaced",
    ),
    pytest.param(
        pods("p0", "p1", slots=1), [Adapter("a", 3)], {},
        {"a": {"p0", "p1"}}, {"a": 1}, id="more-replicas-than-pods",
    ),
    pytest.param(
        pods("p0", "p1", slots=1), [Adapter("a", 2), Adapter("b", 2)], {},
        {"a": {"p0"}, "b": {"p1"}}, {"a": 1, "b": 1}, id="first-replica-for-everyone-first",
    ),
    pytest.param(
        pods("p0", "p1", slots=1), [Adapter("a", 1)], {"p0": ["static"]},
        {"a": {"p1"}}, {}, id="unmanaged-adapter-keeps-its-slot",
    ),
    pytest.param(
        pods("p0", "p1", slots=1), [Adapter("a", 1), Adapter("b", 1)], {"p0": ["a", "b"]},
        {"a": {"p0"}, "b": {"p1"}}, {}, id="over-full-pod-sheds-one",
    ),
    pytest.param(
        pods("p0", "p1"), [Adapter("a", 0)], {"p0": ["a"], "p1": ["a"]},
        {"a": set()}, {}, id="zero-replicas-unloads-everywhere",
    ),
    pytest.param(
        pods("p0", "p1", "p2"), [Adapter("hot", 1, 10.0), Adapter("x", 1), Adapter("y", 1)], {"p0": ["hot"]},
        {"hot": {"p0"}, "x": {"p1"}, "y": {"p2"}}, {}, id="density-keeps-cold-off-the-hot-pod",
    ),
    pytest.param(
        pods("p0", "p1", "p2", slots=4), [Adapter("a", 1, policy="Packed"), Adapter("b", 1, policy="Packed")],
        {"p1": ["static"]}, {"a": {"p1"}, "b": {"p1"}}, {}, id="packed-fills-used-pods",
    ),
    pytest.param(
        [Pod("p0", 2, "n0"), Pod("p1", 2, "n0"), Pod("p2", 2, "n1")], [Adapter("a", 2, policy="Spread")], {},
        {"a": {"p0", "p2"}}, {}, id="spread-over-nodes",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("fleet", "adapters", "loaded", "want", "short"), CASES)
def test_placement_table(
    fleet: list[Pod],
    adapters: list[Adapter],
    loaded: Mapping[str, list[str]],
    want: dict[str, set[str]],
    short: dict[str, int],
) -> None:
    plan = place(fleet, adapters, loaded)
    assert target(plan) == want
    assert dict(plan.shortfall) == short


def test_actions_turn_current_into_target() -> None:
    plan = place(pods("p0", "p1", slots=1), [Adapter("a", 1), Adapter("b", 1)], {"p0": ["a", "b"]})
    assert plan.unloads == (("b", "p0"),)
    assert plan.loads == (("b", "p1"),)
    assert plan.free == {"p0": 0, "p1": 0}


def test_hot_adapter_gets_the_emptiest_pod_first() -> None:
    plan = place(pods("p0", "p1"), [Adapter("cold", 1, 1.0), Adapter("hot", 1, 5.0)], {})
    assert plan.loads[0] == ("hot", "p0")  # heaviest first, on the first (empty) pod by name


# ------------------------------------------------------------------ properties

names = st.sampled_from([f"a{i}" for i in range(8)])


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[Pod], list[Adapter], dict[str, list[str]]]:
    n = draw(st.integers(0, 6))
    fleet = [Pod(f"p{i}", draw(st.integers(1, 4)), f"n{draw(st.integers(0, 2))}") for i in range(n)]
    adapters = [
        Adapter(name, draw(st.integers(0, 4)), draw(st.floats(0.1, 10)), draw(st.sampled_from(POLICIES)))
        for name in sorted(draw(st.sets(names, max_size=6)))
    ]
    everyone = [p.name for p in fleet] + ["gone"]
    loaded = {
        p: sorted(draw(st.sets(st.sampled_from([*names.elements, "static"]), max_size=5))) for p in everyone
    }
    return fleet, adapters, loaded


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_properties(world: tuple[list[Pod], list[Adapter], dict[str, list[str]]]) -> None:
    fleet, adapters, loaded = world
    wanted = {a.name for a in adapters}
    plan = place(fleet, adapters, loaded)
    slots = {p.name: p.slots for p in fleet}
    foreign = {p.name: sum(1 for a in loaded.get(p.name, []) if a not in wanted) for p in fleet}
    hosted: dict[str, int] = dict.fromkeys(slots, 0)
    for adapter in adapters:
        where = plan.pods_of(adapter.name)
        assert where <= set(slots), "only ready pods"
        assert len(where) + plan.shortfall.get(adapter.name, 0) == adapter.replicas
        for pod in where:
            hosted[pod] += 1
    for pod in slots:  # capacity holds unless unmanaged adapters alone overflow it
        assert hosted[pod] + foreign[pod] <= max(slots[pod], foreign[pod])
    for adapter in adapters:  # shortfall only when no pod without it has room
        if plan.shortfall.get(adapter.name):
            assert all(
                pod in plan.pods_of(adapter.name) or hosted[pod] + foreign[pod] >= slots[pod] for pod in slots
            )
    # stability: a feasible current state is kept as is
    current = {a.name: {p for p in slots if a.name in loaded.get(p, [])} for a in adapters}
    feasible = all(len(current[a.name]) <= a.replicas for a in adapters) and all(
        sum(1 for a in loaded.get(p, [])) <= slots[p] for p in slots
    )
    if feasible:
        for adapter in adapters:
            assert current[adapter.name] <= plan.pods_of(adapter.name)
    # idempotence: applying the plan and planning again changes nothing
    after = {p: [a for a in loaded.get(p, []) if a not in wanted] for p in slots}
    for adapter, where in plan.target.items():
        for pod in where:
            after[pod].append(adapter)
    again = place(fleet, adapters, after)
    assert again.loads == ()
    assert again.unloads == ()
    assert target(again) == target(plan)
    # determinism: the same inputs in another order give the same plan (restart safety)
    shuffled = place(list(reversed(fleet)), list(reversed(adapters)), loaded)
    assert target(shuffled) == target(plan)
