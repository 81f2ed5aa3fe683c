"""``unless_disconnected``: the work runs in the caller's task, one watcher cancels it when the client goes.

``receive`` here is an ASGI receive channel fed by the test (what a server gives the app), so the order of
"body read", "client gone" and "work done" is exact. The HTTP-level behaviour (499, the engine aborting) is
covered with real servers in tests/integration/test_gateway_failures.py and test_sim_http.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from flotilla.asgi import unless_disconnected


class Channel:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receive(self) -> dict[str, Any]:
        return await self.queue.get()

    def disconnect(self) -> None:
        self.queue.put_nowait({"type": "http.disconnect"})


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_the_work_runs_in_the_callers_task_and_leaves_no_task_behind() -> None:
    channel = Channel()
    caller = asyncio.current_task()
    before = len(asyncio.all_tasks())

    async def work() -> str:
        assert asyncio.current_task() is caller
        await asyncio.sleep(0.01)
        return "done"

    assert await unless_disconnected(work(), channel.receive) == "done"
    await _settle()
    assert len(asyncio.all_tasks()) == before  # the watcher is gone


async def test_a_disconnect_cancels_the_work_and_the_caller_carries_on() -> None:
    channel = Channel()
    cleaned = asyncio.Event()

    async def work() -> str:
        try:
            await asyncio.sleep(10)
        finally:
            cleaned.set()
        return "never"

    asyncio.get_running_loop().call_later(0.05, channel.disconnect)
    assert await unless_disconnected(work(), channel.receive) is None
    assert cleaned.is_set()
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0  # the watcher's cancellation was taken back
    async with asyncio.timeout(1):  # so a timeout in the same task still works
        await asyncio.sleep(0.01)


async def test_a_cancellation_from_outside_propagates() -> None:
    channel = Channel()
    cancelled = asyncio.Event()

    async def work() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = asyncio.create_task(unless_disconnected(work(), channel.receive))
    await asyncio.sleep(0.02)
    task.cancel()  # server shutdown
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()


async def test_an_exception_of_the_work_propagates_and_a_later_disconnect_is_ignored() -> None:
    channel = Channel()

    async def work() -> None:
        await asyncio.sleep(0.01)
        raise ValueError("bug")

    with pytest.raises(ValueError, match="bug"):
        await unless_disconnected(work(), channel.receive)
    channel.disconnect()
    await _settle()  # nothing is cancelled any more
    await asyncio.sleep(0.01)
