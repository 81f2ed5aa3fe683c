"""Gateway overhead, side by side in one run: ``python -m bench.gateway_overhead [--quick]``.

Contenders, all in front of the same near-zero-cost stub engine (:mod:`bench.stub_engine`):
``direct`` (no proxy), ``bare`` (raw ASGI + aiohttp pass-through, :mod:`bench.passthrough_proxy`), and the
Flotilla gateway with its two upstream transports (``gateway-aiohttp``, ``gateway-httpx``). Each proxy is
pinned to CPU 0 (taskset); the stub and this load generator share CPU 1. Reported:

1. added latency at a fixed request rate (p50/p99 minus direct), non-streaming ~8 KB chat bodies;
2. max requests/s, closed loop at fixed concurrency, and the ratio to the bare proxy;
3. streamed chunks/s (many concurrent streams of back-to-back chunks) and the ratio to the bare proxy;
4. the proxy process's CPU time per request and per chunk (from /proc), which is less sensitive than
   throughput to other load on a shared machine.

Contenders run in ``--rounds`` interleaved rounds; each figure is the median over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson

from flotilla.tokenizer import synthetic_ids, synthetic_text

CLI = ["-c", "from flotilla.cli import main; main()"]
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def process(
    args: list[str], port: int, cpu: str, env: dict[str, str] | None = None, cwd: str | None = None
) -> Iterator[int]:
    proc = subprocess.Popen(
        ["taskset", "-c", cpu, sys.executable, *args],
        cwd=cwd or HERE,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        time.sleep(0.5)
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def body(stream: bool) -> bytes:
    text = synthetic_text(synthetic_ids(1, 2000))  # ~8 KB, ~2k tokens, like the anchors' runs
    return orjson.dumps(
        {"model": "stub", "messages": [{"role": "user", "content": text}], "max_tokens": 16, "stream": stream}
    )


async def fixed_rate(url: str, rate: float, seconds: float) -> list[float]:
    payload = body(False)
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:

        async def one() -> None:
            t0 = time.perf_counter()
            async with session.post(url, data=payload, headers={"content-type": "application/json"}) as r:
                await r.read()
                assert r.status == 200, r.status
            latencies.append(time.perf_counter() - t0)

        tasks = []
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return latencies


async def closed_loop(url: str, concurrency: int, seconds: float, stream: bool) -> tuple[float, float]:
    """(requests/s, chunks/s) with ``concurrency`` clients sending back to back."""
    payload = body(stream)
    done = chunks = 0
    stop = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker() -> None:
            nonlocal done, chunks
            while time.perf_counter() < stop:
                async with session.post(url, data=payload, headers={"content-type": "application/json"}) as r:
                    if stream:
                        async for line in r.content:
                            if line.startswith(b"data: {"):
                                chunks += 1
                    else:
                        await r.read()
                    assert r.status == 200, r.status
                done += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return done / elapsed, chunks / elapsed


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000 if len(values) > 2 else float("nan")


def measure(url: str, pid: int | None, args: argparse.Namespace, seconds: float) -> dict[str, float]:
    asyncio.run(closed_loop(url, 4, 0.5, False))  # warm-up
    lat = asyncio.run(fixed_rate(url, args.rate, seconds))
    cpu0 = cpu_seconds(pid) if pid else 0.0
    t0 = time.perf_counter()
    rps, _ = asyncio.run(closed_loop(url, args.concurrency, seconds, False))
    cpu1 = cpu_seconds(pid) if pid else 0.0
    requests = rps * (time.perf_counter() - t0)
    t1 = time.perf_counter()
    _, cps = asyncio.run(closed_loop(url, args.concurrency, seconds, True))
    chunks = cps * (time.perf_counter() - t1)
    cpu2 = cpu_seconds(pid) if pid else 0.0
    return {
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
        "rps": rps,
        "cps": cps,
        "cpu_req_us": (cpu1 - cpu0) / requests * 1e6 if pid and requests else float("nan"),
        "cpu_chunk_us": (cpu2 - cpu1) / chunks * 1e6 if pid and chunks else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, one round (smoke test)")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="run only these contenders (direct and bare always run)")
    args = parser.parse_args()
    seconds, rounds = (2.0, 1) if args.quick else (args.seconds, args.rounds)
    os.sched_setaffinity(0, {1})
    stub_port = free_port()
    stub_env = {"STUB_CHUNK_MS": "0", "STUB_CHUNKS": "64"}
    runs: dict[str, list[dict[str, float]]] = {}
    with process(["-m", "bench.stub_engine", str(stub_port)], stub_port, "1", stub_env):
        contenders: list[tuple[str, list[str] | None]] = [
            ("direct", None),
            ("bare", ["-m", "bench.passthrough_proxy", "{port}", "http://127.0.0.1:{stub}"]),
            ("gateway-aiohttp", [*CLI, "gateway", "--port", "{port}", "--engine", "http://127.0.0.1:{stub}", "--transport", "aiohttp"]),
            ("gateway-httpx", [*CLI, "gateway", "--port", "{port}", "--engine", "http://127.0.0.1:{stub}", "--transport", "httpx"]),
        ]  # fmt: skip
        for r in range(rounds):
            for name, argv in contenders:
                if args.only and name not in (*args.only, "direct", "bare"):
                    continue
                if argv is None:
                    result = measure(f"http://127.0.0.1:{stub_port}/v1/chat/completions", None, args, seconds)
                else:
                    port = free_port()
                    with process([a.format(port=port, stub=stub_port) for a in argv], port, "0") as pid:
                        result = measure(f"http://127.0.0.1:{port}/v1/chat/completions", pid, args, seconds)
                runs.setdefault(name, []).append(result)
                print(
                    f"round {r + 1} {name:16s} " + "  ".join(f"{k} {v:,.2f}" for k, v in result.items()),
                    flush=True,
                )
    med = {name: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for name, rs in runs.items()}
    d, b = med["direct"], med["bare"]
    print(
        "\n| contender | added p50 (ms) | added p99 (ms) | req/s (1 core) | vs bare | CPU µs/req | vs bare "
        "| chunks/s | vs bare | CPU µs/chunk | vs bare |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, m in med.items():
        if name == "direct":
            continue
        print(
            f"| {name} | {m['p50'] - d['p50']:+.2f} | {m['p99'] - d['p99']:+.2f} | {m['rps']:,.0f} | "
            f"{m['rps'] / b['rps']:.2f} | {m['cpu_req_us']:.0f} | {m['cpu_req_us'] / b['cpu_req_us']:.2f} | "
            f"{m['cps']:,.0f} | {m['cps'] / b['cps']:.2f} | {m['cpu_chunk_us']:.1f} | "
            f"{m['cpu_chunk_us'] / b['cpu_chunk_us']:.2f} |"
        )


if __name__ == "__main__":
    main()
