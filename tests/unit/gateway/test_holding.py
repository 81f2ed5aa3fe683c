"""Holding requests for a model without a ready endpoint: bounds, wake-ups, refresh, and the catalog."""

from __future__ import annotations

import asyncio

import pytest

from flotilla.demand import ARRIVALS_METRIC, IN_FLIGHT_METRIC, QUEUED_METRIC, ModelDemand, parse_demand
from gateway.catalog import Catalog
from gateway.discovery.kube import catalog_entries
from gateway.errors import ModelNotFound, NoEndpoint
from gateway.holding import Holding


def _holding(refresh_log: list[str] | None = None, **kw: float) -> Holding[str]:
    async def refresh(model: str) -> None:
        if refresh_log is not None:
            refresh_log.append(model)

    params: dict[str, float] = {"timeout": 2.0, "max_queued": 10, "max_bytes": 1000, "poll": 0.05} | kw
    return Holding(
        timeout=params["timeout"],
        max_queued=int(params["max_queued"]),
        max_bytes=int(params["max_bytes"]),
        retry_after=3,
        refresh=refresh,
        poll=params["poll"],
    )


async def test_ready_at_once_is_not_held() -> None:
    holding = _holding()
    assert await holding.wait("m", 10, lambda: "e1") == "e1"
    assert holding.total == 0
    assert holding.queued == {}


async def test_a_wake_dispatches_a_held_request_and_counts_it_while_held() -> None:
    holding = _holding(poll=10.0)  # only the wake can release it in time
    ready: list[str] = []
    task = asyncio.create_task(holding.wait("m", 100, lambda: ready[0] if ready else None))
    await asyncio.sleep(0.02)
    assert holding.queued == {"m": 1}
    assert holding.bytes == 100
    ready.append("e1")
    holding.wake()
    assert await asyncio.wait_for(task, 1.0) == "e1"
    assert holding.queued == {}
    assert holding.total == 0
    assert holding.bytes == 0


async def test_timeout_gives_503_with_retry_after_and_releases_the_slot() -> None:
    holding = _holding(timeout=0.1)
    with pytest.raises(NoEndpoint) as info:
        await holding.wait("m", 1, lambda: None)
    assert info.value.headers == {"retry-after": "3"}
    assert "within 0.1 s" in info.value.message
    assert holding.total == 0
    assert holding.queued == {}


@pytest.mark.parametrize(
    ("max_queued", "max_bytes", "size"),
    [pytest.param(1, 1000, 1, id="count"), pytest.param(10, 150, 100, id="bytes")],
)
async def test_a_full_queue_refuses_at_once(max_queued: int, max_bytes: int, size: int) -> None:
    holding = _holding(max_queued=max_queued, max_bytes=max_bytes)
    first = asyncio.create_task(holding.wait("m", size, lambda: None))
    await asyncio.sleep(0.01)
    with pytest.raises(NoEndpoint, match="queue is full"):
        await holding.wait("m", size, lambda: None)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert holding.total == 0
    assert holding.bytes == 0


async def test_a_probe_error_ends_the_wait_with_that_error() -> None:
    holding = _holding()
    calls = 0

    def probe() -> str | None:
        nonlocal calls
        calls += 1
        if calls > 2:
            raise ModelNotFound("gone")
        return None

    with pytest.raises(ModelNotFound):
        await holding.wait("m", 1, probe)
    assert holding.total == 0


async def test_refresh_runs_while_held_but_not_more_than_once_per_poll() -> None:
    log: list[str] = []
    holding = _holding(log, timeout=0.3, poll=0.1)
    waiters = [asyncio.create_task(holding.wait("m", 1, lambda: None)) for _ in range(5)]
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, NoEndpoint) for r in results)
    assert 2 <= len(log) <= 4, log  # ~every 0.1 s over 0.3 s, not once per waiter per poll


def test_catalog_sources_replace_their_own_entries_and_adapters_keep_their_parent() -> None:
    catalog = Catalog()
    catalog.declare("kube", {"base": None, "sql": "base"})
    catalog.declare("up", {"sql": None, "other": None})
    assert catalog.items() == [("base", None), ("other", None), ("sql", "base")]
    catalog.declare("kube", {})
    assert catalog.items() == [("other", None), ("sql", None)]
    assert "base" not in catalog
    assert catalog.base_of("sql") is None


def test_catalog_entries_from_modeldeployments_and_loraadapters() -> None:
    mds = {
        "ns/llama": {
            "metadata": {"name": "llama"},
            "spec": {"model": "meta/llama", "servedModelName": "llama"},
        },
        "ns/plain": {"metadata": {"name": "plain"}, "spec": {"model": "org/plain"}},
        "ns/broken": {"metadata": {"name": "broken"}, "spec": {"replicas": "many"}},
    }
    loras = {
        "ns/sql": {
            "metadata": {"name": "sql"},
            "spec": {"baseModelDeployment": "llama", "source": "file:///a"},
        },
        "ns/named": {
            "metadata": {"name": "named"},
            "spec": {"baseModelDeployment": "plain", "source": "file:///b", "adapterName": "Named-v2"},
        },
        "other/sql": {
            "metadata": {"name": "sql"},
            "spec": {"baseModelDeployment": "llama", "source": "file:///a"},
        },
    }
    assert catalog_entries(mds, loras) == {
        "llama": None,
        "org/plain": None,
        "sql": "llama",
        "Named-v2": "org/plain",
    }  # an adapter whose base is in another namespace, and an invalid spec, are left out


def test_parse_demand_sums_series_per_model_and_ignores_the_rest() -> None:
    text = f"""# HELP {QUEUED_METRIC} held
# TYPE {QUEUED_METRIC} gauge
{QUEUED_METRIC}{{model="a"}} 2.0
{QUEUED_METRIC}{{model="b"}} 0.0
{IN_FLIGHT_METRIC}{{model="a"}} 3.0
{IN_FLIGHT_METRIC}{{model="a",replica="x"}} 1.0
flotilla_gateway_requests_total{{model="a"}} 99.0
# TYPE flotilla_gateway_model_arrivals counter
{ARRIVALS_METRIC}{{model="a"}} 17.0
"""
    assert parse_demand(text) == {"a": ModelDemand(queued=2, in_flight=4, arrivals=17), "b": ModelDemand()}
    assert parse_demand("") == {}
