"""What the operator's control loops share: writing an object's ``/status`` and Events, and the tick loop.

The ModelAutoscaler and ModelGroup loops both run as kopf daemons that compute a whole new status each tick.
They write it the same way: skipped when nothing changed (no resourceVersion churn, no watch event to wake
anyone), as a merge patch on the status subresource, and never raising. A deleted object ends its daemon
anyway, and a refused write is retried by the next tick, so the loop only logs it.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from flotilla.crds import API_VERSION, GROUP, VERSION
from flotilla_operator.errors import KubeError, NotFound
from flotilla_operator.kube import Kube, _path
from flotilla_operator.status import unchanged

log = logging.getLogger("flotilla.operator")


async def write_status(kube: Kube, plural: str, body: dict[str, Any], new: dict[str, Any]) -> None:
    """Merge-patch ``new`` onto the ``/status`` of ``body`` (a flotilla.dev object) unless it is unchanged."""
    if unchanged(body.get("status"), new):
        return
    meta = body["metadata"]
    path = _path(f"{GROUP}/{VERSION}", plural, meta["namespace"], meta["name"], "status")
    try:
        await asyncio.to_thread(
            kube.request, "PATCH", path, body={"status": new}, content_type="application/merge-patch+json"
        )
    except NotFound:
        return  # deleted meanwhile; kopf stops the daemon
    except KubeError as exc:
        log.warning("%s/%s: could not write status: %s", meta["namespace"], meta["name"], exc)


async def post_event(
    kube: Kube, kind: str, body: dict[str, Any], reason: str, message: str, *, now: str, warning: bool = False
) -> None:
    """A Normal (or Warning) Event about ``body``, a flotilla.dev object of ``kind``; ``now`` in RFC 3339."""
    involved = {"apiVersion": API_VERSION, "kind": kind, "metadata": body["metadata"]}
    try:
        await asyncio.to_thread(
            kube.post_event, involved, type_="Warning" if warning else "Normal", reason=reason, message=message,
            now=now[:19] + "Z",
        )  # fmt: skip
    except KubeError as exc:
        log.warning("could not post event %s: %s", reason, exc)


async def tick_until_stopped(
    tick: Callable[[dict[str, Any]], Awaitable[float]], body: Any, stopped: Any, *, what: str
) -> None:
    """Run a control loop's ``tick`` (which returns the seconds until the next one) until kopf stops the daemon.

    ``body`` is kopf's live view of the object, copied for each tick so a tick sees one consistent version. An
    API error or a bug in one tick must not end the loop (kopf would only restart the daemon after a backoff,
    with its windows empty): it is logged and the next tick, 5 s later, starts afresh.
    """
    while not stopped:
        try:
            period = await tick(copy.deepcopy(dict(body)))
        except KubeError as exc:
            log.warning("%s: tick failed: %s", what, exc)
            period = 5.0
        except Exception:
            log.exception("%s: tick crashed", what)
            period = 5.0
        await stopped.wait(period)
