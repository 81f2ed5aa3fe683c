"""The LoRA manager against real engine_sim processes: idempotent client calls, restarts, vanished pods,
and whole converge passes (observe → place → act) on a 3-engine fleet."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from lora_manager import (
    EngineClient,
    EnginePod,
    LoraDisabled,
    Plan,
    Retry,
    SourceRefused,
    Wanted,
    converge,
)
from tests.fleet import SimFleet, sim_fleet

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    args = ["--time-scale", "0.05", "--enable-lora", "--max-loras", "2", "--lora-load-latency", "0.2"]
    with sim_fleet(3, extra_args=args) as f:
        yield f


@pytest.fixture
async def client() -> AsyncIterator[EngineClient]:
    async with EngineClient(timeout=10, retry=Retry(attempts=2, base=0.05)) as engines:
        yield engines


def fleet_pods(fleet: SimFleet) -> list[EnginePod]:
    return [EnginePod(f"pod-{i}", url, slots=2) for i, url in enumerate(fleet.urls)]


async def clean(client: EngineClient, fleet: SimFleet) -> None:
    for url in fleet.urls:
        for name in await client.adapters(url):
            await client.unload(url, name)


async def test_load_and_unload_are_idempotent(client: EngineClient, fleet: SimFleet) -> None:
    url = fleet.urls[0]
    await clean(client, fleet)
    assert await client.load(url, "sql", "org/sql-lora") is True
    assert await client.load(url, "sql", "org/sql-lora") is False  # "already been loaded"
    assert await client.adapters(url) == {"sql": "org/sql-lora"}
    assert await client.unload(url, "sql") is True
    assert await client.unload(url, "sql") is False  # "cannot be found"
    with pytest.raises(SourceRefused, match="No adapter found"):
        await client.load(url, "ghost", "/no/such/adapter")


async def test_converge_places_replicas_and_survives_a_restart(client: EngineClient, fleet: SimFleet) -> None:
    await clean(client, fleet)
    pods = fleet_pods(fleet)
    wanted = [Wanted("a", "org/a", 2), Wanted("b", "org/b", 1)]
    first = await converge(client, pods, wanted)
    assert {k: len(v) for k, v in first.loaded.items()} == {"a": 2, "b": 1}
    assert not first.errors
    second = await converge(client, pods, wanted)  # nothing to do: the engines already agree
    assert second.actions == []
    # an engine restarts and forgets its adapters: the next pass loads them there again, nothing moves
    victim = sorted(first.loaded["a"])[0]
    index = int(victim.removeprefix("pod-"))
    fleet.restart(index)
    third = await converge(client, pods, wanted)
    reloaded = {(a.adapter, a.pod) for a in third.actions if a.verb == "load"}
    lost = {(name, victim) for name, where in first.loaded.items() if victim in where}
    assert reloaded == lost
    assert third.loaded == first.loaded


async def test_vanished_pod_is_left_out_and_its_adapters_re_placed(
    client: EngineClient, fleet: SimFleet
) -> None:
    await clean(client, fleet)
    pods = fleet_pods(fleet)
    wanted = [Wanted("c", "org/c", 1)]
    first = await converge(client, pods, wanted)
    (host,) = first.loaded["c"]
    index = int(host.removeprefix("pod-"))
    fleet.kill(index)
    try:
        second = await converge(client, pods, wanted)
        assert host in second.unreachable
        assert len(second.loaded["c"]) == 1
        assert host not in second.loaded["c"]
    finally:
        fleet.restart(index)


async def test_engine_without_runtime_lora() -> None:
    with sim_fleet(1, extra_args=["--time-scale", "0.05"]) as plain:
        async with EngineClient(timeout=10, retry=Retry(attempts=1)) as client:
            with pytest.raises(LoraDisabled, match="enable-lora"):
                await client.load(plain.urls[0], "x", "org/x")


async def test_pending_target_is_kept_and_its_load_reissued(client: EngineClient, fleet: SimFleet) -> None:
    """A restarted controller continues an earlier pass's choice instead of choosing afresh (no surplus copy)."""
    await clean(client, fleet)
    pods = fleet_pods(fleet)
    planned: list[dict[str, frozenset[str]]] = []

    async def record(plan: Plan) -> None:
        planned.append(dict(plan.target))

    # a fresh placement would pick pod-0; the pending choice pod-2 wins and is loaded (re-issued)
    outcome = await converge(
        client, pods, [Wanted("p", "org/p", 1, pending=frozenset({"pod-2"}))], on_plan=record
    )
    assert outcome.loaded["p"] == {"pod-2"}
    assert planned == [{"p": frozenset({"pod-2"})}]
    # pending on a pod that does not answer is ignored
    outcome = await converge(client, pods[:2], [Wanted("q", "org/q", 1, pending=frozenset({"pod-2"}))])
    assert outcome.loaded["q"] == {"pod-0"}
