"""One ASGI helper shared by the gateway and the engine simulator: stop work nobody waits for any more.

Both run a request's work (routing, the upstream call and relaying the response; the simulated generation)
while watching the ASGI ``receive`` channel: once the body has been read, the next message can only be
``http.disconnect``. When it comes first, the work is cancelled — closing the upstream connection, or aborting
the engine request and freeing its KV blocks, as vLLM's ``with_cancellation`` does — and the caller learns that
nobody listens.

The work runs in the caller's own task; one watcher task waits on ``receive`` and cancels that task when the
client goes. (The version before ran the work as a second task and waited on both with ``asyncio.wait``: two
tasks, a wait set and their callbacks per request, measurable on the gateway's path.) The watcher marks its
cancellation, so it is told apart from a cancellation from outside (server shutdown), which propagates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

T = TypeVar("T")

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class _Watcher:
    __slots__ = ("fired", "receive", "task")

    def __init__(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        self.receive, self.task = receive, task
        self.fired = False

    async def __call__(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass
        self.fired = True
        self.task.cancel()


async def unless_disconnected(work: Awaitable[T], receive: Receive) -> T | None:
    """``work``'s result, or None if the client disconnected first (``work`` is then cancelled).

    ``work`` runs in the current task. If the caller itself is cancelled (server shutdown), so is the work, and
    the cancellation propagates.
    """
    task = asyncio.current_task()
    assert task is not None, "unless_disconnected must run in a task"
    watch = _Watcher(receive, task)
    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        result = await work
        if watch.fired:  # the work swallowed the watcher's cancellation and finished anyway
            task.uncancel()
        return result
    except asyncio.CancelledError:
        if watch.fired and task.uncancel() == 0:
            return None  # only the watcher cancelled: the client left
        raise
    finally:
        watcher.cancel()
