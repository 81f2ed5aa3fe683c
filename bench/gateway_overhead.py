"""Gateway overhead next to the peer routers, in one run: ``python -m bench.gateway_overhead [--quick]``
(also ``flotilla bench --suite overhead``).

Every contender stands in front of the same near-zero-cost stub engine (:mod:`bench.stub_engine`):

* ``direct`` — the client talks to the stub;
* ``bare`` — a raw ASGI + aiohttp pass-through proxy (:mod:`bench.passthrough_proxy`; ``bare@granian`` is the
  same app under granian instead of uvicorn), the floor for a Python proxy; ``bare-prefix`` the same proxy
  doing only what any prefix-aware Python router must (parse, hash character blocks, look up and record), the
  floor for a Python prefix router;
* ``flotilla:<strategy>`` — ``flotilla gateway`` with its default settings (JSON request logs, metrics,
  approximate prefix index, disconnect watching), the strategy as routing profile; ``…@httpx`` uses httpx's
  own pool instead of aiohttp's;
* ``baseline`` — with ``--baseline-src DIR``: the ``flotilla:default`` gateway of another checkout
  (``git worktree add DIR REV``), for a before/after in the same run;
* ``sglang:<policy>`` / ``vllm-router:<policy>`` — the Rust routers (the ``peers`` extra), launched as in the
  routing suite (:mod:`bench.contenders`).

Any contender may carry extra environment, ``flotilla:default+FLOTILLA_GATEWAY_LOG_LEVEL=WARNING``, to compare
one setting side by side.

Each proxy is pinned to CPU 0 (``taskset``, all its threads); the stub and this load generator share CPU 1.
All contenders are started up front and measured in ``--rounds`` rounds, in a shuffled order per round, so
load drift on a shared machine hits them alike. Per round and contender:

1. *added latency, paired per request*: ``--latency-requests`` sequential requests, each sent to the
   contender and to ``direct`` back to back (in random order); added = contender − direct, per pair;
2. *requests/s*: a closed loop at ``--concurrency`` for ``--seconds``; the proxy's CPU time (``/proc``, the
   process and its children) gives CPU µs per request;
   the same requests' latencies give the latency *under load* (p50 and p99 over every round);
3. *chunks/s*: ``--concurrency`` concurrent streams of back-to-back SSE chunks; CPU µs per chunk.

Requests are ~8 KB chat bodies (~2,000 tokens), each with distinct leading text so no tokenizer or prefix
cache short-cuts them, non-streaming, ``max_tokens`` 16; streams are ``STUB_CHUNKS`` (64) chunks.
Figures are medians over rounds with the range; latency percentiles pool every round's pairs, with 95 %
bootstrap intervals over pairs.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import random
import re
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import orjson

from bench import contenders as peers
from bench.procs import Proc, StartError, flotilla_argv, free_port, wait_http
from flotilla.tokenizer import synthetic_ids, synthetic_text

HERE = Path(__file__).resolve().parent.parent
DEFAULT = (
    "direct",
    "bare",
    "bare-prefix",
    "flotilla:default",
    "sglang:cache_aware",
    "sglang:round_robin",
    "vllm-router:round_robin",
)
QUICK = ("direct", "bare", "bare-prefix", "flotilla:default", "sglang:cache_aware")


def tree_cpu_seconds(pid: int) -> float:
    """user + system CPU of ``pid`` and its live descendants (all threads), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.name)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            total += (int(stats[p][11]) + int(stats[p][12])) / tick
        todo += children.get(p, [])
    return total


class Bodies:
    """Distinct ~2k-token chat bodies: a shared 2,000-token text behind a per-request number."""

    def __init__(self) -> None:
        self.text = synthetic_text(synthetic_ids(1, 2000))
        self.n = itertools.count()

    def next(self, stream: bool) -> bytes:
        content = f"{next(self.n)} {self.text}"
        return orjson.dumps(
            {
                "model": "stub",
                "messages": [{"role": "user", "content": content}],
                "max_tokens": 16,
                "stream": stream,
            }
        )


@dataclass
class Contender:
    name: str
    argv: list[str] | None  # None: direct
    env: dict[str, str] = field(default_factory=dict)
    url: str = ""
    proc: Proc | None = None
    pairs: list[tuple[float, float]] = field(default_factory=list)  # (direct s, contender s)
    rps: list[float] = field(default_factory=list)
    cps: list[float] = field(default_factory=list)
    cpu_req_us: list[float] = field(default_factory=list)
    cpu_chunk_us: list[float] = field(default_factory=list)
    #: seconds per request in the requests/s closed loop, every round: latency under load (a stall of the
    #: proxy's event loop, e.g. a garbage-collector pass, lands on every request in flight)
    loaded: list[float] = field(default_factory=list)
    errors: int = 0
    skipped: str = ""


def build(spec: str, stub: int, port: int, baseline_src: str | None) -> Contender:
    """``name[+ENV=VALUE…]``: the contender ``name``, with extra environment (an A/B of one setting)."""
    name, *assignments = spec.split("+")
    c = _build(name, stub, port, baseline_src)
    c.name = spec
    c.env.update(a.split("=", 1) for a in assignments)  # type: ignore[misc]
    return c


def _build(name: str, stub: int, port: int, baseline_src: str | None) -> Contender:
    engine = f"http://127.0.0.1:{stub}"
    if name == "direct":
        return Contender(name, None, url=engine)
    if name in ("bare", "bare@granian", "bare-prefix"):
        extra = {"bare@granian": ["--server", "granian"], "bare-prefix": ["--prefix"]}.get(name, [])
        return Contender(name, [sys.executable, "-m", "bench.passthrough_proxy", str(port), engine, *extra])
    if name.startswith("flotilla:") or name == "baseline":
        strategy, _, transport = (name.partition(":")[2] or "default").partition("@")
        argv = flotilla_argv("gateway", "--host", "127.0.0.1", "--port", str(port), "--engine", engine,
                             "--strategy", strategy if name != "baseline" else "default")  # fmt: skip
        if transport:
            argv += ["--transport", transport]
        env = {"PYTHONPATH": str(Path(baseline_src).resolve())} if name == "baseline" and baseline_src else {}
        return Contender(name, argv, env=env)
    peer = peers.parse(name)
    reason = peer.unavailable()
    if not isinstance(peer, peers._RustRouter):
        raise StartError(f"bad contender {name!r}")
    peer.port = port
    return Contender(name, peer.argv([engine], "stub", []), skipped=reason or "")


async def start(c: Contender, port: int, cwd: str | None) -> None:
    assert c.argv is not None
    argv = ["taskset", "-c", "0", *c.argv]
    c.proc = Proc(re.sub(r"[^A-Za-z0-9_.-]", "-", c.name), argv, env=c.env, cwd=cwd or str(HERE))
    c.url = f"http://127.0.0.1:{port}"
    body = {"model": "stub", "messages": [{"role": "user", "content": "ba"}], "max_tokens": 1}
    await wait_http(c.proc, c.url + "/v1/chat/completions", method="POST", json=body, within=60)


async def post(session: aiohttp.ClientSession, url: str, body: bytes, stream: bool) -> int:
    """One request; returns the chunks received (1 for a non-streamed answer)."""
    async with session.post(
        url + "/v1/chat/completions", data=body, headers={"content-type": "application/json"}
    ) as r:
        if r.status != 200:
            await r.read()
            raise RuntimeError(f"HTTP {r.status}")
        if not stream:
            await r.read()
            return 1
        chunks = 0
        async for line in r.content:
            if line.startswith(b"data: {"):
                chunks += 1
        return chunks


async def paired(c: Contender, direct: Contender, bodies: Bodies, n: int, rng: random.Random) -> None:
    async with aiohttp.ClientSession() as cs, aiohttp.ClientSession() as ds:
        for _ in range(3):  # warm both connections
            await post(cs, c.url, bodies.next(False), False)
            await post(ds, direct.url, bodies.next(False), False)
        for _ in range(n):
            times = {}
            order = [(c.url, cs), (direct.url, ds)]
            rng.shuffle(order)
            for url, session in order:
                body = bodies.next(False)
                t0 = time.perf_counter()
                try:
                    await post(session, url, body, False)
                except (aiohttp.ClientError, RuntimeError):
                    c.errors += 1
                    break
                times[url] = time.perf_counter() - t0
            else:
                c.pairs.append((times[direct.url], times[c.url]))


async def closed_loop(c: Contender, bodies: Bodies, concurrency: int, seconds: float, stream: bool) -> None:
    count = 0
    stop = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker() -> None:
            nonlocal count
            while time.perf_counter() < stop:
                try:
                    sent = time.perf_counter()
                    got = await post(session, c.url, bodies.next(stream), stream)
                    if not stream:
                        c.loaded.append(time.perf_counter() - sent)
                    count += got  # not ``count += await …``: that reads count before awaiting, losing updates
                except (aiohttp.ClientError, RuntimeError):
                    c.errors += 1

        cpu0 = tree_cpu_seconds(c.proc.popen.pid) if c.proc else math.nan
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
        cpu = (tree_cpu_seconds(c.proc.popen.pid) if c.proc else math.nan) - cpu0
    (c.cps if stream else c.rps).append(count / wall)
    (c.cpu_chunk_us if stream else c.cpu_req_us).append(cpu / count * 1e6 if count else math.nan)


async def run(args: argparse.Namespace) -> list[Contender]:
    os.sched_setaffinity(0, {1})
    stub_port = free_port()
    stub = Proc("stub", ["taskset", "-c", "1", sys.executable, "-m", "bench.stub_engine", str(stub_port)],
                env={"STUB_CHUNK_MS": "0", "STUB_CHUNKS": "64"}, cwd=str(HERE))  # fmt: skip
    everyone: list[Contender] = []
    try:
        await wait_http(stub, f"http://127.0.0.1:{stub_port}/health")
        for name in args.contenders:
            port = free_port()
            c = build(name, stub_port, port, args.baseline_src)
            everyone.append(c)
            if c.argv is None or c.skipped:
                continue
            try:
                await start(c, port, args.baseline_src if name == "baseline" else None)
            except StartError as exc:
                c.skipped = f"failed to start: {str(exc).splitlines()[0]}"
            print(f"{name}: {c.skipped or 'started'}", file=sys.stderr, flush=True)
        direct = everyone[0]
        live = [c for c in everyone if not c.skipped]
        bodies = Bodies()
        rng = random.Random(args.seed)
        for c in live:  # warm-up: pools, tokenizer, the routers' trees
            await closed_loop(c, bodies, 4, 0.5, False)
            c.rps.clear()
            c.cpu_req_us.clear()
        for r in range(args.rounds):
            order = live[:]
            rng.shuffle(order)
            for c in order:
                if c is not direct:
                    await paired(c, direct, bodies, args.latency_requests, rng)
                await closed_loop(c, bodies, args.concurrency, args.seconds, False)
                await closed_loop(c, bodies, args.concurrency, args.seconds, True)
                print(f"round {r + 1} {c.name:24s} req/s {c.rps[-1]:8,.0f}  µs/req {c.cpu_req_us[-1]:6.0f}  "
                      f"chunks/s {c.cps[-1]:8,.0f}  µs/chunk {c.cpu_chunk_us[-1]:5.1f}", file=sys.stderr, flush=True)  # fmt: skip
    finally:
        for c in everyone:
            if c.proc is not None:
                c.proc.stop()
                c.proc.cleanup()
        stub.stop()
        stub.cleanup()
    return everyone


def added(pairs: Sequence[tuple[float, float]], q: float, seed: int = 0) -> tuple[float, float, float]:
    """The contender's q-th percentile minus direct's over the same pairs (ms), with a bootstrap 95 % interval."""
    if len(pairs) < 3:
        return math.nan, math.nan, math.nan
    arr = np.asarray(pairs) * 1000
    point = float(np.percentile(arr[:, 1], q) - np.percentile(arr[:, 0], q))
    picks = np.random.default_rng(seed).integers(0, len(arr), size=(1000, len(arr)))
    reps = np.percentile(arr[picks, 1], q, axis=1) - np.percentile(arr[picks, 0], q, axis=1)
    return point, float(np.percentile(reps, 2.5)), float(np.percentile(reps, 97.5))


def loaded_ms(c: Contender, seed: int = 0) -> tuple[float, float, float, float]:
    """(p50, p99, and p99's bootstrap 95 % interval) of the latency under load, in ms; NaN without data."""
    if len(c.loaded) < 3:
        return math.nan, math.nan, math.nan, math.nan
    arr = np.asarray(c.loaded) * 1000
    picks = np.random.default_rng(seed).integers(0, len(arr), size=(200, len(arr)))
    reps = np.percentile(arr[picks], 99, axis=1)
    return (float(np.percentile(arr, 50)), float(np.percentile(arr, 99)), float(np.percentile(reps, 2.5)),
            float(np.percentile(reps, 97.5)))  # fmt: skip


def _med(values: Sequence[float], fmt: str) -> str:
    clean = [v for v in values if not math.isnan(v)]
    if not clean:
        return "–"
    if len(clean) == 1:
        return format(clean[0], fmt)
    return f"{format(statistics.median(clean), fmt)} ({format(min(clean), fmt)}–{format(max(clean), fmt)})"


def table(everyone: Sequence[Contender]) -> str:
    by = {c.name: c for c in everyone}
    direct, bare = by["direct"], by.get("bare")
    lines = [
        "| contender | added p50 (ms) | added p99 (ms) | median of paired diffs (ms) | req/s (1 core) | vs bare "
        "| CPU µs/req | under load p50 / p99 (ms) | chunks/s | vs direct | CPU µs/chunk | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in everyone:
        if c.skipped:
            lines.append(f"| {c.name} | skipped: {c.skipped} ||||||||||")
            continue
        p50, p50l, p50h = added(c.pairs, 50)
        p99, p99l, p99h = added(c.pairs, 99)
        diffs = [(b - a) * 1000 for a, b in c.pairs]
        vs_bare = [a / b for a, b in zip(c.rps, bare.rps, strict=False)] if bare and not bare.skipped else []
        vs_direct = [a / b for a, b in zip(c.cps, direct.cps, strict=False)]
        lat = (
            f"{p50:+.2f} [{p50l:+.2f}, {p50h:+.2f}] | {p99:+.2f} [{p99l:+.2f}, {p99h:+.2f}] | "
            f"{statistics.median(diffs):+.2f}"
            if c.pairs
            else "– | – | –"
        )
        l50, l99, l99l, l99h = loaded_ms(c)
        under_load = f"{l50:.1f} / {l99:.1f} [{l99l:.1f}, {l99h:.1f}]" if c.loaded else "–"
        lines.append(
            f"| {c.name} | {lat} | {_med(c.rps, ',.0f')} | {_med(vs_bare, '.2f')} | {_med(c.cpu_req_us, ',.0f')} | "
            f"{under_load} | {_med(c.cps, ',.0f')} | {_med(vs_direct, '.2f')} | {_med(c.cpu_chunk_us, '.1f')} | {c.errors} |"
        )
    direct_ms = [a * 1000 for c in everyone for a, _ in c.pairs]
    if direct_ms:
        lines.append(
            f"\ndirect, over all pairs: p50 {np.percentile(direct_ms, 50):.2f} ms, p99 {np.percentile(direct_ms, 99):.2f} ms"
        )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short phases, two rounds, fewer peers (smoke test)")
    p.add_argument("--contenders", nargs="*", help=f"default: {' '.join(DEFAULT)} (direct always runs first)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seconds", type=float, default=4.0, help="per closed-loop phase per round")
    p.add_argument("--latency-requests", type=int, default=150, help="paired requests per round")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline-src", help="a checkout of another revision whose gateway runs as 'baseline'")
    p.add_argument("--json", type=Path, help="write the raw per-round figures here")
    return p


def configure(args: argparse.Namespace) -> argparse.Namespace:
    if args.quick:
        args.seconds, args.latency_requests, args.rounds = 1.5, 60, 2
    names = args.contenders or list(QUICK if args.quick else DEFAULT)
    if args.baseline_src and "baseline" not in names:
        names.append("baseline")
    args.contenders = ["direct", *(n for n in names if n != "direct")]
    return args


def dump(everyone: Sequence[Contender], path: Path) -> None:
    keep = ("name", "pairs", "rps", "cps", "cpu_req_us", "cpu_chunk_us", "errors", "skipped")
    rows = [{**{k: getattr(c, k) for k in keep}, "loaded_ms": loaded_ms(c)} for c in everyone]
    path.write_text(json.dumps(rows, indent=1))


def suite(quick: bool, out: Path, command: str) -> Path:
    """``flotilla bench --suite overhead``: the table into ``out/report.md``, raw figures in results.json."""
    args = configure(parser().parse_args(["--quick"] if quick else []))
    everyone = asyncio.run(run(args))
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(f"# Gateway overhead\n\n`{command}`\n\n{table(everyone)}\n")
    dump(everyone, out / "results.json")
    return out / "report.md"


def main(argv: list[str] | None = None) -> None:
    args = configure(parser().parse_args(argv))
    everyone = asyncio.run(run(args))
    print(table(everyone))
    if args.json:
        dump(everyone, args.json)


if __name__ == "__main__":
    main()
