"""Run a real gateway (uvicorn, real sockets) in a background thread of the test process.

In-process so tests can read ``app.state.gateway`` (pool, stats, metrics) while the official openai client
talks to it over HTTP exactly as users do.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from gateway import GatewaySettings, create_app
from gateway.server import server_config
from gateway.service import Gateway
from tests.support import free_port


@dataclass
class RunningGateway:
    url: str
    app: Any
    server: uvicorn.Server
    loop: asyncio.AbstractEventLoop | None = None

    @property
    def gateway(self) -> Gateway:
        gw: Gateway = self.app.state.gateway
        return gw

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def wait_until(self, predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.gateway):
                return
            time.sleep(0.05)
        raise TimeoutError(f"gateway: {what} not reached in {timeout}s")

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the gateway's event loop (e.g. ``set_endpoints``) and return its result."""
        assert self.loop is not None

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def wait_healthy(self, n: int, timeout: float = 20.0) -> None:
        self.wait_until(
            lambda g: sum(1 for e in g.fleet.pool if e.available) >= n, timeout, f"{n} healthy endpoints"
        )


@contextlib.contextmanager
def running_gateway(**settings: Any) -> Iterator[RunningGateway]:
    port = free_port()
    settings.setdefault("scrape_interval", 0.2)
    settings.setdefault("models_interval", 0.5)
    settings.setdefault("debug_headers", True)  # tests check which engine served (x-flotilla-endpoint)
    app = create_app(GatewaySettings(port=port, **settings))
    config = server_config(app, app.state.gateway.settings, host="127.0.0.1", loop="asyncio")
    server = uvicorn.Server(config)
    # the loop is owned here, so tests can run code on it (``call``); asyncio.Runner closes it the way
    # asyncio.run does (leftover tasks cancelled, async generators and the executor shut down), so no
    # connection is left for the garbage collector to find
    loops: list[asyncio.AbstractEventLoop] = []
    started = threading.Event()

    def serve() -> None:
        with asyncio.Runner() as runner:
            loops.append(runner.get_loop())
            started.set()
            runner.run(server.serve())

    thread = threading.Thread(target=serve, name="gateway-under-test", daemon=True)
    thread.start()
    if not started.wait(30):
        raise RuntimeError("gateway loop did not start")
    loop = loops[0]
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("gateway did not start")
        time.sleep(0.02)
    try:
        yield RunningGateway(f"http://127.0.0.1:{port}", app, server, loop)
    finally:
        server.should_exit = True
        thread.join(15)


def fresh_rate_window() -> None:
    """Rate limits count wall-clock minutes: start a test's requests well inside one, so no reset lands
    mid-test."""
    left = 60 - time.time() % 60
    if left < 10:
        time.sleep(left + 0.1)
