"""One ASGI helper shared by the gateway and the engine simulator: stop work nobody waits for any more.

Both run a request's work (routing and the upstream call; the simulated generation) while watching the ASGI
``receive`` channel: once the body has been read, the next message can only be ``http.disconnect``. When it
comes first, the work is cancelled — closing the upstream connection, or aborting the engine request and
freeing its KV blocks, as vLLM's ``with_cancellation`` does — and the caller learns that nobody listens.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any, TypeVar

T = TypeVar("T")

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(work: Coroutine[Any, Any, T], receive: Receive) -> T | None:
    """``work``'s result, or None if the client disconnected first (``work`` is then cancelled and awaited).

    If the caller itself is cancelled (server shutdown), the work is cancelled with it.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None
