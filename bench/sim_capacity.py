"""How much traffic one CPU core of ``flotilla sim`` sustains: engines × requests/s, streaming and not.

    python -m bench.sim_capacity --duration 8 --concurrency 64

For each configuration a fresh ``flotilla sim`` process is started, pinned to one core (CPU 0 when the machine
has more than one; the load generator pins itself to another core), and driven closed-loop over keep-alive
connections by a minimal raw HTTP/1.1 client (so the client, not the simulator, is never the cheaper side of
the measurement). Reported per configuration:

* ``req/s``      completed requests per wall second (depends on what else the machine runs);
* ``req/cpu-s``  completed requests per CPU-second the simulator process used (its capacity per core, robust
  to a shared machine: it divides by the CPU the simulator actually got);
* ``engines/core`` engines ÷ CPU utilisation: how many engines under this per-engine load one core could
  host (meaningful for the realistic-latency rows, whose load is bounded by the simulated GPU, not the CPU);
* ``lag``        the largest ``flotilla_sim_lag_max_seconds`` over the engines (> 0: simulated time fell behind wall
  time, i.e. the process could not keep up with the simulated GPUs it emulates; a transient peak, e.g. a burst
  of requests or the process being descheduled on a shared machine, recovers as late steps run back to back).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import orjson

LAUNCH = "from flotilla.cli import main; main()"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


@dataclass
class Result:
    name: str
    engines: int
    stream: bool
    preset: str
    requests: int
    errors: int
    wall: float
    cpu: float
    lag: float

    def row(self, max_tokens: int) -> str:
        rps = self.requests / self.wall
        per_cpu = self.requests / self.cpu if self.cpu else float("nan")
        # the zero preset's steps take no simulated time, so its clock cannot keep pace with wall time by design
        lag = "–" if self.preset == "zero" else f"{self.lag:.3f}"
        # only meaningful when simulated GPU time, not the CPU, bounds the load (not for the zero preset)
        per_core = (
            "–" if self.preset == "zero" or not self.cpu else f"{self.engines * self.wall / self.cpu:.1f}"
        )
        return (
            f"| {self.name} | {self.preset} | {self.engines} | {'yes' if self.stream else 'no'} | "
            f"{rps:,.0f} | {per_cpu:,.0f} | {per_cpu * max_tokens:,.0f} | {self.cpu / self.wall:.2f} | "
            f"{lag} | {self.errors} | {per_core} |"
        )


def free_base_port(n: int) -> int:
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        ok = True
        for i in range(n):
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", base + i))
                except OSError:
                    ok = False
                    break
        if ok and base + n < 65535:
            return base
    raise RuntimeError("no free port range")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def http(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    writer.write(request)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    length, chunked = None, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        key, _, value = line.decode().partition(":")
        key = key.strip().lower()
        if key == "content-length":
            length = int(value)
        elif key == "transfer-encoding" and "chunked" in value:
            chunked = True
    if length is not None:
        return status, await reader.readexactly(length)
    body = bytearray()
    if chunked:
        while (size := int((await reader.readline()).strip(), 16)) > 0:
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readline()
    return status, bytes(body)


async def worker(port: int, payload: bytes, deadline: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    try:
        while time.monotonic() < deadline:
            status, body = await http(reader, writer, head + payload)
            if status == 200 and (b'"usage"' in body or body.rstrip().endswith(b"[DONE]")):
                counts[0] += 1
            else:
                counts[1] += 1
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def wait_ready(proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"simulator exited with {proc.wait()}")
        if line.strip() == b"ready":
            return
    raise TimeoutError("simulator not ready")


def max_lag(port: int, engines: int) -> float:
    import httpx

    lag = 0.0
    for i in range(engines):
        text = httpx.get(f"http://127.0.0.1:{port + i}/metrics", timeout=10).text
        for m in re.finditer(r"^flotilla_sim_lag_max_seconds\{[^}]*\} (\S+)$", text, re.M):
            lag = max(lag, float(m.group(1)))
    return lag


def run_one(
    name: str,
    *,
    engines: int,
    stream: bool,
    preset: str,
    time_scale: float,
    args: argparse.Namespace,
    concurrency: int | None = None,
) -> Result:
    clients = concurrency or args.concurrency
    base = free_base_port(engines)
    cmd = [sys.executable, "-c", LAUNCH, "sim", "--engines", str(engines), "--port", str(base), "--preset", preset,
           "--time-scale", str(time_scale), "--log-level", "error"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        if args.pin and len(os.sched_getaffinity(0)) > 1:
            os.sched_setaffinity(proc.pid, {0})
        wait_ready(proc)
        prompt = " ".join(["ka zu"] * (args.prompt_tokens // 2))
        body: dict[str, object] = {
            "model": MODEL,
            "prompt": prompt,
            "max_tokens": args.max_tokens,
            "ignore_eos": True,
        }
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        payload = orjson.dumps(body)
        counts = [0, 0]

        async def drive(seconds: float) -> None:
            deadline = time.monotonic() + seconds
            await asyncio.gather(
                *(worker(base + i % engines, payload, deadline, counts) for i in range(clients))
            )

        asyncio.run(drive(1.0))  # warm-up
        counts[:] = [0, 0]
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        asyncio.run(drive(args.duration))
        wall, cpu = time.monotonic() - t0, cpu_seconds(proc.pid) - cpu0
        lag = max_lag(base, engines)
        return Result(name, engines, stream, preset, counts[0], counts[1], wall, cpu, lag)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per configuration")
    p.add_argument("--concurrency", type=int, default=64, help="closed-loop clients (spread over engines)")
    p.add_argument(
        "--per-engine", type=int, default=32, help="clients per engine in the realistic-latency rows"
    )
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--engines", default="1,8", help="comma-separated engine counts")
    p.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin the simulator to CPU 0")
    args = p.parse_args(argv)
    if args.pin and len(os.sched_getaffinity(0)) > 1:
        others = sorted(os.sched_getaffinity(0) - {0})
        os.sched_setaffinity(0, set(others))
    results = []
    for n in (int(x) for x in args.engines.split(",")):
        for stream in (False, True):
            results.append(  # noqa: PERF401 - one measurement at a time, in order
                run_one(f"zero×{n}", engines=n, stream=stream, preset="zero", time_scale=1.0, args=args)
            )
        results.append(
            run_one(
                f"a100×{n}",
                engines=n,
                stream=True,
                preset="a100-llama3-8b",
                time_scale=1.0,
                args=args,
                concurrency=args.per_engine * n,
            )
        )
    print(f"prompt {args.prompt_tokens} tokens, {args.max_tokens} output tokens (ignore_eos), "
          f"concurrency {args.concurrency} (zero rows) / {args.per_engine} per engine (a100 rows), "
          f"{args.duration:.0f} s per row, simulator pinned: {args.pin}")  # fmt: skip
    print("| config | preset | engines | stream | req/s | req/cpu-s | tok/cpu-s | cpu util | lag s | errors "
          "| engines/core |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(r.row(args.max_tokens))


if __name__ == "__main__":
    main()
