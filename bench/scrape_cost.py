"""What an idle gateway spends on watching its engines: ``python -m bench.scrape_cost [--engines N]``.

Every ``scrape_interval`` (0.5 s) the gateway reads ``/health`` and ``/metrics`` of every engine (and
``/v1/models`` every 2 s), so this cost grows with the fleet whether or not requests flow. With no requests,
the gateway's CPU time is almost all scraping; this measures it per scrape for each upstream transport
(``--transport aiohttp``, the default, and ``httpx``), side by side: one ``flotilla sim`` process serves
``--engines`` zero-latency engines, and in each of ``--rounds`` rounds every contender's gateway is started
in a shuffled order, left ``--warmup`` seconds, then its CPU time (``/proc``) is read over ``--seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time

from bench.gateway_overhead import tree_cpu_seconds
from bench.procs import Proc, flotilla_argv, free_port, free_ports, wait_http

CONTENDERS = ("aiohttp", "httpx")


async def measure(transport: str, engines: list[str], args: argparse.Namespace) -> float:
    """CPU µs per engine scrape of an idle gateway using ``transport``."""
    port = free_port()
    argv = flotilla_argv("gateway", "--host", "127.0.0.1", "--port", str(port), "--transport", transport,
                         "--log-text", *[a for e in engines for a in ("--engine", e)])  # fmt: skip
    proc = Proc(f"gateway-{transport}", argv)
    try:
        await wait_http(proc, f"http://127.0.0.1:{port}/ready", within=60)
        await asyncio.sleep(args.warmup)
        before, t0 = tree_cpu_seconds(proc.popen.pid), time.monotonic()
        await asyncio.sleep(args.seconds)
        cpu, elapsed = tree_cpu_seconds(proc.popen.pid) - before, time.monotonic() - t0
    finally:
        proc.stop()
        proc.cleanup()
    scrapes = len(engines) * elapsed / 0.5  # one /health + /metrics round per engine per interval
    return cpu / scrapes * 1e6


async def run(args: argparse.Namespace) -> dict[str, list[float]]:
    base = free_ports(args.engines)
    sim = Proc(
        "sim", flotilla_argv("sim", "--engines", str(args.engines), "--port", str(base), "--preset", "zero")
    )
    engines = [f"http://127.0.0.1:{base + i}" for i in range(args.engines)]
    results: dict[str, list[float]] = {c: [] for c in CONTENDERS}
    rng = random.Random(args.seed)
    try:
        for url in engines:
            await wait_http(sim, url + "/health", within=60)
        for r in range(args.rounds):
            order = list(CONTENDERS)
            rng.shuffle(order)
            for transport in order:
                results[transport].append(await measure(transport, engines, args))
                print(
                    f"round {r + 1} {transport}: {results[transport][-1]:,.0f} CPU µs per scrape", flush=True
                )
    finally:
        sim.stop()
        sim.cleanup()
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engines", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    results = asyncio.run(run(args))
    print("| transport | CPU µs per scrape (median) | per round |\n|---|---|---|")
    for name, values in results.items():
        rounds = " / ".join(f"{v:,.0f}" for v in values)
        print(f"| {name} | {statistics.median(values):,.0f} | {rounds} |")


if __name__ == "__main__":
    main()
