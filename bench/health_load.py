"""Health under load: does the gateway keep answering ``/health`` while it tokenises huge prompts?

``python -m bench.health_load`` (or ``flotilla bench --suite health-under-load``). In front of the near-zero
cost stub engine (:mod:`bench.stub_engine`), 50 clients send 1 MB chat prompts back to back (every
request's content distinct from its first character, so no tokenizer cache helps) while a separate prober process asks ``/health`` every 10 ms on its
own connection. The gateway is pinned to CPU 0; stub and load share CPU 1; the prober
may run on either. Reported per contender:
/health latency p50/p99/max, requests served, and the gateway's resident memory (idle, peak, after).

Contenders, interleaved over ``--rounds``: ``bare`` (the raw ASGI + aiohttp pass-through of
:mod:`bench.passthrough_proxy`, which tokenises nothing: the floor of moving these bodies through one core,
its ``/health`` answered by the stub behind it), the gateway with different settings, and optionally another
source tree:

* ``flotilla`` — the defaults: approximate prefix blocks from the prompt's characters (``prefix_hash=chars``:
  nothing tokenised, at most ``max_prefix_blocks`` blocks hashed), bodies ≥ 64 KiB on a worker thread;
* ``flotilla:tokens`` — ``prefix_hash=tokens``: only the blocks routing can use are tokenised
  (``max_prefix_blocks`` × ``block_size`` ids), on the worker thread for large bodies;
* ``flotilla:inline`` — the defaults with every body parsed on the event loop (what the thread adds);
* ``flotilla:switch-5ms`` — the tokenizer thread, at Python's default GIL switch interval (5 ms; the gateway
  sets 1 ms);
* ``baseline`` — with ``--baseline-src DIR``: the gateway of another checkout (``git worktree add DIR REV``),
  run with its own defaults — e.g. the revision before issue 12, which tokenised every whole prompt on the
  event loop.

``--tokenizer llama3`` builds a Llama-3-style model directory (:mod:`flotilla.tokenizer_files`) and gives
it to every contender; the default is Flotilla's synthetic tokenizer, as ``flotilla up``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson

from bench.procs import free_port
from flotilla.tokenizer import synthetic_ids, synthetic_text

CLI = ["-c", "from flotilla.cli import main; main()"]
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open")


@contextlib.contextmanager
def process(
    args: list[str], port: int, cpu: str, env: dict[str, str] | None = None, cwd: str | None = None
) -> Iterator[int]:
    """``python ARGS`` pinned to ``cpu``, yielded once ``port`` opens, terminated on exit."""
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


CONTENDERS: dict[str, dict[str, str]] = {
    "flotilla": {},
    "flotilla:tokens": {"FLOTILLA_GATEWAY_PREFIX_HASH": "tokens"},
    "flotilla:inline": {"FLOTILLA_GATEWAY_TOKENIZE_THREAD_BYTES": str(1 << 40)},
    "flotilla:switch-5ms": {"FLOTILLA_GATEWAY_SWITCH_INTERVAL": "0.005"},
}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def probe(url: str, seconds: float, interval: float) -> list[float]:
    """``/health`` latencies (s), one request every ``interval`` on one kept-alive connection."""
    import http.client

    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=seconds)
    out = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        t0 = time.perf_counter()
        try:
            conn.request("GET", "/health")
            conn.getresponse().read()
        except TimeoutError:  # no answer for the whole run: that is the latency
            out.append(time.perf_counter() - t0)
            break
        out.append(time.perf_counter() - t0)
        time.sleep(max(0.0, interval - (time.perf_counter() - t0)))
    return out


def body_parts(size: int) -> tuple[bytes, bytes]:
    """A request is ``head + str(n).encode() + tail``: ``size`` characters of content that differ in their
    first characters, built without re-serialising a megabyte per request."""
    content = synthetic_text(synthetic_ids(7, size // 5))[:size]
    whole = orjson.dumps(
        {"model": "stub", "max_tokens": 1, "messages": [{"role": "user", "content": "@" + content}]}
    )
    head, tail = whole.split(b"@", 1)
    return head, tail


async def load(url: str, clients: int, parts: tuple[bytes, bytes], seconds: float) -> int:
    """``clients`` posting back to back for ``seconds``; returns requests answered 200."""
    done = sent = 0
    head, tail = parts
    stop = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=120)
    ) as session:

        async def client() -> None:
            nonlocal done, sent
            while time.perf_counter() < stop:
                sent += 1
                payload = head + str(sent).encode() + tail
                async with session.post(url, data=payload, headers={"content-type": "application/json"}) as r:
                    await r.read()
                    done += r.status == 200

        await asyncio.gather(*(client() for _ in range(clients)))
    return done


def measure(
    port: int, pid: int, clients: int, parts: tuple[bytes, bytes], seconds: float
) -> dict[str, float]:
    base = f"http://127.0.0.1:{port}"
    # the prober may run on either CPU: pinned with the load generator, it measured that CPU's queue
    prober = subprocess.Popen(
        [
            "taskset",
            "-c",
            "0,1",
            sys.executable,
            "-m",
            "bench.health_load",
            "--probe",
            base,
            "--seconds",
            str(seconds + 1),
        ],
        stdout=subprocess.PIPE,
    )
    idle = rss_mb(pid)
    peak = idle
    halves: list[float] = [idle, idle]  # peak over the first and the second half of the load
    started = time.perf_counter()
    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(load(base + "/v1/chat/completions", clients, parts, seconds))
        while not task.done():
            loop.run_until_complete(asyncio.sleep(0.05))
            rss = rss_mb(pid)
            peak = max(peak, rss)
            half = int(time.perf_counter() - started > seconds / 2)
            halves[half] = max(halves[half], rss)
        served = task.result()
    finally:
        loop.close()
    out, _ = prober.communicate(timeout=120)
    latencies = sorted(json.loads(out))

    def rank(q: float) -> float:  # nearest rank: a stalled gateway gives few probes, not extrapolated ones
        return float(latencies[max(0, math.ceil(q * len(latencies)) - 1)]) * 1000

    return {"health_p50_ms": rank(0.5), "health_p99_ms": rank(0.99), "health_max_ms": latencies[-1] * 1000,
            "probes": len(latencies), "served": served, "rss_idle_mb": idle, "rss_peak_mb": peak,
            "rss_peak_first_half_mb": halves[0], "rss_peak_second_half_mb": halves[1],
            "rss_after_mb": rss_mb(pid)}  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    os.sched_setaffinity(0, {1})
    parts = body_parts(args.size)
    stub_port = free_port()
    runs: dict[str, list[dict[str, float]]] = {}
    with contextlib.ExitStack() as stack:
        env: dict[str, str] = {}
        if args.tokenizer == "llama3":
            from flotilla.tokenizer_files import write_llama3

            directory = write_llama3(Path(stack.enter_context(tempfile.TemporaryDirectory())) / "llama3")
            env["FLOTILLA_GATEWAY_TOKENIZER"] = str(directory / "tokenizer.json")
        stack.enter_context(process(["-m", "bench.stub_engine", str(stub_port)], stub_port, "1", {}))
        contenders = {"bare": {}, **CONTENDERS}
        if args.baseline_src:
            contenders["baseline"] = {}
        for r in range(args.rounds):
            for name, extra in contenders.items():
                if args.only and name not in args.only:
                    continue
                port = free_port()
                argv = [*CLI, "gateway", "--port", str(port), "--engine", f"http://127.0.0.1:{stub_port}"]
                if name == "bare":
                    argv = ["-m", "bench.passthrough_proxy", str(port), f"http://127.0.0.1:{stub_port}"]
                cwd_env = {**env, **extra, "FLOTILLA_GATEWAY_LOG_LEVEL": "WARNING"}
                if name == "baseline":
                    cwd_env["PYTHONPATH"] = str(Path(args.baseline_src).resolve())
                with process(
                    argv, port, "0", cwd_env, cwd=args.baseline_src if name == "baseline" else None
                ) as pid:
                    result = measure(port, pid, args.clients, parts, args.seconds)
                runs.setdefault(name, []).append(result)
                print(f"round {r + 1} {name:22s} " + "  ".join(f"{k} {v:,.1f}" for k, v in result.items()),
                      flush=True)  # fmt: skip
    return runs


def table(runs: dict[str, list[dict[str, float]]]) -> str:
    lines = [
        "| contender | /health p50 (ms) | p99 (ms) | max (ms) | requests served | RSS idle (MB) "
        "| RSS peak, 1st half (MB) | 2nd half (MB) | RSS after (MB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rs in runs.items():
        m = {k: statistics.median(x[k] for x in rs) for k in rs[0]}
        lines.append(
            f"| {name} | {m['health_p50_ms']:.1f} | {m['health_p99_ms']:.1f} | {m['health_max_ms']:.0f} | "
            f"{m['served']:.0f} | {m['rss_idle_mb']:.0f} | {m['rss_peak_first_half_mb']:.0f} | "
            f"{m['rss_peak_second_half_mb']:.0f} | {m['rss_after_mb']:.0f} |"
        )
    return "\n".join(lines)


def suite(quick: bool, out: Path, command: str) -> Path:
    """``flotilla bench --suite health-under-load``: both tokenizers, written to ``out/report.md``."""
    sections = [f"# Health under load\n\n`{command}`\n"]
    for tokenizer in ("synthetic", "llama3"):
        argv = ["--tokenizer", tokenizer, *(["--seconds", "3", "--rounds", "1"] if quick else [])]
        sections.append(f"## Tokenizer: {tokenizer}\n\n{table(run(parser().parse_args(argv)))}\n")
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(sections))
    return out / "report.md"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--size", type=int, default=1 << 20, help="prompt characters per request")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--tokenizer", choices=["synthetic", "llama3"], default="synthetic")
    p.add_argument("--baseline-src", help="a checkout of another revision whose gateway runs as 'baseline'")
    p.add_argument("--only", nargs="*", help="run only these contenders")
    p.add_argument("--probe", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.probe:
        print(json.dumps(probe(args.probe, args.seconds, 0.01)))
        return
    print(table(run(args)))


if __name__ == "__main__":
    main()
