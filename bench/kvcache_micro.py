"""Micro-benchmarks of the kvcache package: ``python -m bench.kvcache_micro [--quick] [--baseline-src DIR]``.

Every figure is measured side by side in one run with a baseline, so the ratios mean something on a shared
machine: the bounded MemoryIndex against the original unbounded dict-of-sets index, the Redis match against a
bare PING round trip, xxh3 block hashing against SHA-256 (vLLM's default hash), and memory per block for
both in-process layouts and for Redis. The Redis server is a private one started here (loopback only).
With ``--baseline-src`` (a checkout of another revision), that revision's ``MemoryIndex`` is timed against this
one on ``record`` at capacity, interleaved in one process, and its memory per entry is shown next to this one's.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import importlib.util
import os
import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from contextlib import contextmanager

import msgspec
import redis

from bench.harness.localhost import redis_server_binary as redis_binary
from kvcache import KVEventSubscriber, MemoryIndex, RedisIndex, block_hashes

PROMPT_TOKENS = 2048
ENDPOINTS = [f"10.1.0.{i}:8000" for i in range(8)]


class NaiveIndex:
    """The first, unbounded MemoryIndex (hash -> set of endpoints): the baseline for speed and memory."""

    def __init__(self) -> None:
        self._holders: dict[int, set[str]] = {}

    def match(self, hashes: Sequence[int], endpoints: Collection[str]) -> dict[str, int]:
        alive = set(endpoints)
        result = dict.fromkeys(endpoints, 0)
        for depth, h in enumerate(hashes):
            holders = self._holders.get(h)
            if not holders:
                break
            alive &= holders
            if not alive:
                break
            for e in alive:
                result[e] = depth + 1
        return result

    def record(self, endpoint: str, hashes: Sequence[int]) -> None:
        for h in hashes:
            self._holders.setdefault(h, set()).add(endpoint)


def prompts(n: int, seed: int = 1) -> Iterator[list[int]]:
    rng = random.Random(seed)
    for _ in range(n):
        yield [rng.randrange(128_000) for _ in range(PROMPT_TOKENS)]


def check(condition: bool, what: str) -> None:
    """Sanity checks that survive ``python -O``: a benchmark of a wrong answer is worthless."""
    if not condition:
        raise RuntimeError(f"benchmark sanity check failed: {what}")


def pct(samples: list[float], q: float) -> float:
    return sorted(samples)[min(len(samples) - 1, int(q * len(samples)))]


def time_calls(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t = clock()
        fn()
        out.append((clock() - t) / 1000)
    return out


async def time_async(fn: Callable[[], Awaitable[object]], n: int) -> list[float]:
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t = clock()
        await fn()
        out.append((clock() - t) / 1000)
    return out


# ---------------------------------------------------------------------------- in process


def bench_match_in_process(blocks: int, n: int) -> list[str]:
    bounded, naive = MemoryIndex(capacity=blocks + 1024), NaiveIndex()
    per_prompt = PROMPT_TOKENS // 16
    for i, tokens in enumerate(prompts(blocks // per_prompt)):
        hashes = block_hashes(tokens)
        bounded.record_now(ENDPOINTS[i % len(ENDPOINTS)], hashes)
        naive.record(ENDPOINTS[i % len(ENDPOINTS)], hashes)
    query = block_hashes(next(prompts(1, seed=99)))
    for e in ENDPOINTS:  # worst case: every candidate holds the whole prompt, the walk goes to the end
        bounded.record_now(e, query)
        naive.record(e, query)
    assert (
        bounded.match_now(query, ENDPOINTS) == naive.match(query, ENDPOINTS) == dict.fromkeys(ENDPOINTS, 128)
    )
    rows = []
    results = {}
    for name, fn in (
        ("MemoryIndex (bounded, bitmask)", lambda: bounded.match_now(query, ENDPOINTS)),
        ("unbounded dict-of-sets baseline", lambda: naive.match(query, ENDPOINTS)),
    ):
        time_calls(fn, n // 10)
        samples = time_calls(fn, n)
        results[name] = statistics.median(samples)
        rows.append(f"| {name} | {len(bounded):,} | {results[name]:.1f} | {pct(samples, 0.99):.1f} |")
    ratio = results["unbounded dict-of-sets baseline"] / results["MemoryIndex (bounded, bitmask)"]
    rows.append(f"| ratio baseline / bounded (p50) | | {ratio:.2f}× | |")
    return rows


def bench_hashing(n: int) -> list[str]:
    tokens = next(prompts(1))

    def sha256_chain() -> None:  # the same chain with vLLM's default digest, for scale
        packed = memoryview(bytes(memoryview(__import__("array").array("I", tokens))))
        parent = hashlib.sha256(b"").digest()
        for i in range(len(tokens) // 16):
            parent = hashlib.sha256(parent + packed[i * 64 : (i + 1) * 64]).digest()

    rows = []
    med = {}
    for name, fn in (
        ("xxh3-64 chain (block_hashes)", lambda: block_hashes(tokens)),
        ("sha256 chain", sha256_chain),
    ):
        time_calls(fn, n // 10)
        med[name] = statistics.median(time_calls(fn, n)) / (PROMPT_TOKENS / 1000)
        rows.append(f"| {name} | {med[name]:.2f} |")
    rows.append(f"| ratio sha256 / xxh3 | {med['sha256 chain'] / med['xxh3-64 chain (block_hashes)']:.2f}× |")
    return rows


def baseline_index(src: str) -> type[MemoryIndex]:
    """``MemoryIndex`` of another checkout (kvcache/memory.py imports only the standard library)."""
    spec = importlib.util.spec_from_file_location(
        "baseline_memory", os.path.join(src, "kvcache", "memory.py")
    )
    if spec is None or spec.loader is None:
        raise SystemExit(f"no kvcache/memory.py under {src}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cls: type[MemoryIndex] = module.MemoryIndex
    return cls


def bench_record(capacity: int, n: int, baseline: type[MemoryIndex], rounds: int = 3) -> list[str]:
    """CPU µs per ``record_now`` of a 128-block prompt into an index at capacity (every record evicts), this
    layout and the baseline's in a shuffled order per round: distinct prompts (nothing shared, the gateway
    overhead bench's case), and prompts sharing a 96-block stem with a private 32-block tail on 8 endpoints."""
    per_prompt = PROMPT_TOKENS // 16
    rng = random.Random(7)
    fill = [[rng.getrandbits(64) for _ in range(per_prompt)] for _ in range(capacity // per_prompt + 1)]
    stem = [rng.getrandbits(64) for _ in range(96)]
    cases = {
        "distinct": [[rng.getrandbits(64) for _ in range(per_prompt)] for _ in range(n)],
        "shared 96-block stem": [stem + [rng.getrandbits(64) for _ in range(32)] for _ in range(n)],
    }
    contenders: dict[str, type[MemoryIndex]] = {"MemoryIndex (this tree)": MemoryIndex, "baseline": baseline}
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for name in random.sample(list(contenders), len(contenders)):
            for case, batch in cases.items():
                index = contenders[name](capacity)
                for i, hashes in enumerate(fill):
                    index.record_now(ENDPOINTS[i % 8], hashes)
                gc.collect()
                start = time.process_time()
                for i, hashes in enumerate(batch):
                    index.record_now(ENDPOINTS[i % 8], hashes)
                times.setdefault((name, case), []).append((time.process_time() - start) / n * 1e6)
                check(len(index) == capacity, f"{name} holds {len(index)} entries, not its capacity")
    rows = []
    for case in cases:
        mine, base = times[("MemoryIndex (this tree)", case)], times[("baseline", case)]
        rows.append(
            f"| {case} | {' / '.join(f'{t:.0f}' for t in mine)} | {' / '.join(f'{t:.0f}' for t in base)} | "
            f"{statistics.median(b / m for b, m in zip(base, mine, strict=True)):.2f}× |"
        )
    return rows


def bench_memory(blocks: int, baseline: type[MemoryIndex] | None = None) -> list[str]:
    """Traced bytes per (endpoint, block) entry, including the hash ints (they are made inside the trace)."""
    rows = []
    makers: list[tuple[str, Callable[[], MemoryIndex | NaiveIndex]]] = [
        ("MemoryIndex (bounded)", lambda: MemoryIndex(capacity=blocks)),
        ("dict-of-sets baseline", NaiveIndex),
    ]
    if baseline is not None:
        makers.append(("MemoryIndex of --baseline-src", lambda: baseline(capacity=blocks)))
    for name, make in makers:
        gc.collect()
        rng = random.Random(5)
        tracemalloc.start()
        index = make()
        step = 128
        for i in range(0, blocks, step):  # distinct blocks, spread over 8 endpoints
            chunk = [rng.getrandbits(64) for _ in range(step)]
            if not isinstance(index, NaiveIndex):
                index.record_now(ENDPOINTS[(i // step) % 8], chunk)
            else:
                index.record(ENDPOINTS[(i // step) % 8], chunk)
        del chunk
        current, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        per_block = current / blocks
        rows.append(f"| {name} | {blocks:,} | {per_block:.0f} | {per_block * 1e6 / 2**20:.0f} MiB |")
        del index
    return rows


def bench_ingest(batches: int) -> list[str]:
    """Decode + recompute router hashes + index update, through the subscriber's public ingest()."""
    rng = random.Random(7)
    payloads = []
    engine_hash = 1
    live: list[int] = []
    events = blocks = 0
    for seq in range(batches):
        evs: list[object] = []
        for _ in range(4):  # four requests per engine step, each storing a 4-block chain
            hashes = list(range(engine_hash, engine_hash + 4))
            engine_hash += 4
            tokens = [rng.randrange(128_000) for _ in range(64)]
            evs.append({"type": "BlockStored", "block_hashes": hashes, "parent_block_hash": None,
                        "token_ids": tokens, "block_size": 16, "lora_id": None, "medium": "GPU",
                        "lora_name": None})  # fmt: skip
            live += hashes
            blocks += 4
        if len(live) > 4096:  # steady state: the engine evicts as much as it stores
            evs.append({"type": "BlockRemoved", "block_hashes": live[:16], "medium": "GPU"})
            del live[:16]
        events += len(evs)
        payloads.append((seq, msgspec.msgpack.encode([time.time(), evs, 0])))

    async def run() -> tuple[float, KVEventSubscriber]:
        sub = KVEventSubscriber(MemoryIndex(), block_size=16)
        await sub.add_endpoint("e:1", "tcp://127.0.0.1:1", "m")
        t = time.process_time()
        for seq, payload in payloads:
            await sub.ingest("e:1", seq, payload)
        return time.process_time() - t, sub

    cpu, sub = asyncio.run(run())
    check(sub.stats.gaps == 0, "no gaps")
    check(sub.stats.unknown_parents == 0, "no unknown parents")
    return [
        f"| {batches:,} batches, {events:,} events, {blocks:,} blocks stored | {cpu:.2f} s CPU "
        f"| {events / cpu:,.0f} events/s | {sub.stats.blocks_stored / cpu:,.0f} blocks/s |"
    ]


# ---------------------------------------------------------------------------- Redis


@contextmanager
def private_redis() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    workdir = tempfile.mkdtemp(prefix="kvbench-redis-")
    proc = subprocess.Popen(
        [redis_binary(), "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        client.close()
        yield port
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


async def bench_redis(blocks: int, n: int) -> list[str]:
    with private_redis() as port:
        admin = redis.Redis(host="127.0.0.1", port=port)
        index = RedisIndex(f"redis://127.0.0.1:{port}/0", ttl=3600, endpoint_capacity=None)
        try:
            check(await index.start(), "redis reachable")
            base_mem = int(admin.info("memory")["used_memory"])
            per_prompt = PROMPT_TOKENS // 16
            for i, tokens in enumerate(prompts(blocks // per_prompt, seed=3)):
                await index.record(ENDPOINTS[i % len(ENDPOINTS)], block_hashes(tokens))
            await index.flush()
            redis_mem = (int(admin.info("memory")["used_memory"]) - base_mem) / blocks
            query = block_hashes(next(prompts(1, seed=99)))
            for e in ENDPOINTS:
                await index.record(e, query)
            await index.flush()
            check(await index.match(query, ENDPOINTS) == dict.fromkeys(ENDPOINTS, 128), "redis match")
            ping_client = index._client  # same connection pool and socket settings as the index

            async def ping() -> None:
                await ping_client.ping()

            await time_async(ping, n // 10)
            ping_samples = await time_async(ping, n)
            admin.config_resetstat()  # from here on the server counts only the matches below
            trips_before = index.stats.round_trips
            match_samples = await time_async(lambda: index.match(query, ENDPOINTS), n)
            trips = index.stats.round_trips - trips_before
            stats = admin.info("commandstats")
            evalsha = int(stats["cmdstat_evalsha"]["calls"])
            others = sum(
                int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_evalsha", "cmdstat_info")
            )
            server_us = float(stats["cmdstat_evalsha"]["usec_per_call"])
            check(evalsha == trips == n, f"one round trip per match: {evalsha=} {trips=} {n=}")
            p50_match, p50_ping = statistics.median(match_samples), statistics.median(ping_samples)
            return [
                f"| RedisIndex.match, 128 blocks × 8 endpoints | {p50_match:.0f} | {pct(match_samples, 0.99):.0f} |",
                f"| bare PING on the same connection pool | {p50_ping:.0f} | {pct(ping_samples, 0.99):.0f} |",
                f"| ratio match / PING (p50) | {p50_match / p50_ping:.2f}× | |",
                f"| EVALSHA calls seen by the server / client round trips / matches | {evalsha} / {trips} / {n} | |",
                f"| SMISMEMBER calls run inside the script, per match | {others / n:.0f} | |",
                f"| mean server time per match script (commandstats usec_per_call) | {server_us:.0f} | |",
                f"| Redis used_memory per (endpoint, block) entry | {redis_mem:.0f} B | |",
            ]
        finally:
            admin.close()
            await index.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a few seconds)")
    parser.add_argument("--baseline-src", help="a checkout whose MemoryIndex is timed against this one's")
    args = parser.parse_args()
    baseline = baseline_index(args.baseline_src) if args.baseline_src else None
    size = 100_000 if args.quick else 1_000_000
    n = 2_000 if args.quick else 20_000
    print(f"# kvcache micro-benchmarks ({'quick' if args.quick else 'full'}; {os.cpu_count()} CPUs)\n")
    print("## match, 2,048-token prompt (128 blocks), 8 candidate endpoints, in process\n")
    print("| index | entries | p50 µs | p99 µs |\n|---|---|---|---|")
    print("\n".join(bench_match_in_process(size, n)))
    print("\n## match over Redis (loopback)\n\n| what | p50 µs | p99 µs |\n|---|---|---|")
    print("\n".join(asyncio.run(bench_redis(size // 10, n // 10))))
    print("\n## hashing, µs per 1,000 tokens (2,048-token prompt)\n\n| hash | µs / 1k tokens |\n|---|---|")
    print("\n".join(bench_hashing(n // 4)))
    print(
        "\n## memory per block (tracemalloc)\n\n| index | blocks | bytes / block | per million |\n|---|---|---|---|"
    )
    print("\n".join(bench_memory(size, baseline)))
    if baseline is not None:
        print(
            f"\n## record of a 128-block prompt at capacity ({size // 2:,} entries), CPU µs per record, per round"
            "\n\n| prompts | this tree | baseline | baseline ÷ this (median) |\n|---|---|---|---|"
        )
        print("\n".join(bench_record(size // 2, n // 4, baseline)))
    print("\n## KV-event ingest, one core (decode + rehash + index)\n\n| workload | CPU | events | blocks |")
    print("|---|---|---|---|")
    print("\n".join(bench_ingest(2_000 if args.quick else 20_000)))


if __name__ == "__main__":
    main()
