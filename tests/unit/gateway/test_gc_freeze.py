"""A started gateway freezes the startup heap out of the cyclic GC, once per process, unless told not to."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from gateway.app import create_app, freeze_startup_heap
from gateway.settings import GatewaySettings


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Start from a process with nothing frozen (an earlier test's gateway may have frozen it) and leave it so."""
    gc.unfreeze()
    yield
    gc.unfreeze()


async def _started(settings: GatewaySettings) -> int:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        return gc.get_freeze_count()


@pytest.mark.usefixtures("unfrozen")
async def test_a_started_gateway_freezes_what_is_alive() -> None:
    assert await _started(GatewaySettings(engines=[])) > 10_000  # FastAPI, pydantic, aiohttp and the gateway


@pytest.mark.usefixtures("unfrozen")
async def test_gc_freeze_off_leaves_the_collector_alone() -> None:
    assert await _started(GatewaySettings(engines=[], gc_freeze=False)) == 0


@pytest.mark.usefixtures("unfrozen")
def test_freezing_happens_once_per_process() -> None:
    assert freeze_startup_heap() > 0
    frozen = gc.get_freeze_count()
    assert freeze_startup_heap() == 0  # a second app in the same process does not re-freeze
    assert gc.get_freeze_count() == frozen
