"""Serving N engines from one process: one uvicorn ``Server`` per engine, all in the current asyncio loop.

``serve_engines`` is an async context manager used by ``flotilla sim`` and by anything that embeds a fleet
(``flotilla up``, in-process tests). uvicorn's per-server signal capture is switched off because several
servers share one loop; the caller owns signal handling and leaves the context to stop everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Generator, Sequence
from dataclasses import dataclass

import uvicorn

from engine_sim.config import EngineConfig
from engine_sim.engine import Engine
from engine_sim.server import create_app


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass
class RunningEngine:
    engine: Engine
    url: str
    server: uvicorn.Server


def fleet_configs(
    base: EngineConfig, engines: int, base_port: int, kv_events_port: int | None
) -> list[EngineConfig]:
    """Configs for engines 0..N-1: ports ``base_port + i``, KV events on ``kv_events_port + i``."""
    out = []
    for i in range(engines):
        # one seed for all, like pods sharing PYTHONHASHSEED: same prompt -> same text and block hashes anywhere
        update: dict[str, object] = {"engine_index": i, "port": base_port + i}
        if base.kv_events:
            update["kv_events_endpoint"] = f"tcp://{base.host}:{(kv_events_port or 5557) + i}"
        out.append(base.model_copy(update=update))
    return out


@contextlib.asynccontextmanager
async def serve_engines(
    configs: Sequence[EngineConfig], *, log_level: str = "warning"
) -> AsyncIterator[list[RunningEngine]]:
    """Start one HTTP server per config (on ``config.host:config.port``) and stop them all on exit."""
    running: list[RunningEngine] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        for cfg in configs:
            engine = Engine(cfg)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((cfg.host, cfg.port))
            port = sock.getsockname()[1]
            config = uvicorn.Config(
                create_app(engine),
                log_level=log_level,
                access_log=False,
                lifespan="on",
                timeout_graceful_shutdown=2,
            )
            server = _Server(config)
            running.append(RunningEngine(engine, f"http://{cfg.host}:{port}", server))
            tasks.append(asyncio.create_task(server.serve(sockets=[sock]), name=f"http-{cfg.port}"))
        while not all(r.server.started for r in running):
            for t in tasks:
                if t.done():
                    t.result()  # propagate a startup failure (port in use, …)
                    raise RuntimeError("an engine server exited during startup")
            await asyncio.sleep(0.01)
        yield running
    finally:
        for r in running:
            r.server.should_exit = True
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
