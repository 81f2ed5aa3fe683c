"""Where the gateway's CPU goes on the 2k-token path: ``python -m bench.gateway_profile [--seconds 6] [--stream]``.

The gateway (``create_app`` with default settings, in front of :mod:`bench.stub_engine`) runs in this process,
pinned to CPU 0, under pyinstrument; a loader process on CPU 1 warms it up, then drives the closed loop of
:mod:`bench.gateway_overhead` (concurrency 32, distinct ~2k-token chat bodies) and signals the start and end of
the measured window, so only the loaded phase is sampled. Prints the process's CPU per request (or per
chunk with ``--stream``; the profiler's own cost included) and the call tree of the main thread.

``--gc`` replaces the profiler by a count of the cyclic garbage collector's passes in the window, per
generation, with their total and longest pause (``gc.callbacks``); compare ``FLOTILLA_GATEWAY_GC_FREEZE=false``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from bench.procs import Proc, free_port, wait_http

_LOADER = """
import asyncio, json, os, signal, sys, time
os.sched_setaffinity(0, {{1}})
from bench.gateway_overhead import Bodies, Contender, closed_loop
from bench.procs import wait_http

async def go() -> None:
    await wait_http(None, "http://127.0.0.1:{port}/health", within=30)
    c = Contender("gateway", None, url="http://127.0.0.1:{port}")
    bodies = Bodies()
    await closed_loop(c, bodies, 8, 1.0, {stream})
    os.kill({parent}, signal.SIGUSR1)
    t0 = time.perf_counter()
    await closed_loop(c, bodies, 32, {seconds}, {stream})
    units = (c.cps if {stream} else c.rps)[-1] * (time.perf_counter() - t0)
    os.kill({parent}, signal.SIGUSR2)
    print(json.dumps(units))

asyncio.run(go())
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--stream", action="store_true", help="profile streamed requests (CPU per chunk)")
    p.add_argument("--interval", type=float, default=0.0002, help="pyinstrument's sampling interval (s)")
    p.add_argument("--gc", action="store_true", help="count garbage-collector passes instead of profiling")
    args = p.parse_args()
    import uvicorn
    from pyinstrument import Profiler

    from gateway.app import create_app
    from gateway.server import server_config
    from gateway.settings import GatewaySettings

    os.sched_setaffinity(0, {0})
    stub_port, port = free_port(), free_port()
    stub = Proc("stub", ["taskset", "-c", "1", sys.executable, "-m", "bench.stub_engine", str(stub_port)],
                env={"STUB_CHUNK_MS": "0"})  # fmt: skip
    try:
        import asyncio

        asyncio.run(wait_http(stub, f"http://127.0.0.1:{stub_port}/health"))
        settings = GatewaySettings(engines=[f"http://127.0.0.1:{stub_port}"], host="127.0.0.1", port=port)
        server = uvicorn.Server(server_config(create_app(settings), settings))
        loader_src = _LOADER.format(port=port, stream=args.stream, seconds=args.seconds, parent=os.getpid())
        loader = subprocess.Popen([sys.executable, "-c", loader_src], stdout=subprocess.PIPE)
        profiler: Profiler | GCPasses = (
            GCPasses() if args.gc else Profiler(interval=args.interval, async_mode="disabled")
        )
        window: dict[str, float] = {}

        def begin(*_: Any) -> None:
            window["cpu"] = time.process_time()
            profiler.start()

        def end(*_: Any) -> None:
            profiler.stop()
            window["used"] = time.process_time() - window["cpu"]
            server.should_exit = True

        signal.signal(signal.SIGUSR1, begin)
        signal.signal(signal.SIGUSR2, end)
        server.run()
        units = float(json.loads(loader.communicate(timeout=60)[0]))
    finally:
        stub.stop()
        stub.cleanup()
    unit = "chunk" if args.stream else "request"
    print(f"CPU µs per {unit}: {window['used'] / units * 1e6:.0f} (profiler included; {units:.0f} {unit}s)")
    if isinstance(profiler, GCPasses):
        print(profiler.report(window.get("used", 0.0)))
    else:
        print(
            profiler.output_text(unicode=True, color=False, show_all=bool(os.environ.get("PROFILE_SHOW_ALL")))
        )


class GCPasses:
    """The cyclic GC's passes while started: count, total and longest pause per generation (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.passes: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._on = False
        self._t0 = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if not self._on:
            return
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.passes[info["generation"]].append(time.perf_counter() - self._t0)

    def start(self) -> None:
        self._on = True

    def stop(self) -> None:
        self._on = False

    def report(self, cpu_seconds: float) -> str:
        lines = [
            f"objects frozen out of the GC: {gc.get_freeze_count()}",
            "| generation | passes | total (ms) | longest (ms) | share of the process's CPU |",
            "|---|---|---|---|---|",
        ]
        for generation, pauses in self.passes.items():
            total = sum(pauses)
            share = f"{total / cpu_seconds:.1%}" if cpu_seconds else "–"
            lines.append(
                f"| {generation} | {len(pauses)} | {total * 1e3:.1f} | {max(pauses, default=0.0) * 1e3:.1f} | {share} |"
            )
        return "\n".join(lines)


if __name__ == "__main__":
    main()
