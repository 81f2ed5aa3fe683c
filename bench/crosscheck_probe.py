"""Which of guidellm's differences slows Flotilla's gateway? ``python -m bench.crosscheck_probe``.

The cross-check (bench/crosscheck.py) found Flotilla's client-side TTFT 3.6× higher under guidellm than under
``flotilla bench`` while the SGLang router's was unchanged. guidellm differs from bench/client.py in three ways
that could matter to a router: it spends ~3× the CPU (three processes on a 2-core machine), it opens one TCP
connection per request, and its requests carry Faker English as content parts. This probe keeps
``flotilla bench``'s own client and timing and adds one difference at a time, on the standard suite's fleet
and ``gsp`` shape:

* ``pooled`` — bench/client.py as the suites use it (the baseline);
* ``fresh-conn`` — the same client with keep-alive off: a new TCP connection per request;
* ``burner`` — pooled, beside a process that keeps one core 75 % busy (about guidellm's CPU over a run);
* ``guidellm-bodies`` — pooled, replaying the message bodies guidellm sent in a recorded run (``--bodies``, a
  guidellm ``benchmarks.json`` of the cross-check) at the same Poisson times.

A diagnostic with few rounds on a shared machine, not a routing result: it prints TTFT p50/p90 per run and the
Flotilla ÷ peer p90 per mode and round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bench import contenders as registry
from bench.arrivals import poisson_schedule
from bench.client import run_open_loop, send_one
from bench.fleet import Fleet
from bench.results import RequestResult
from bench.stats import percentile_inf
from bench.suites import SGLANG_BEST, standard
from bench.workloads import BenchRequest, build

MODES = ("pooled", "fresh-conn", "burner", "guidellm-bodies")
#: a process keeping one core ~75 % busy for argv[1] seconds (7.5 ms spin, 2.5 ms sleep)
BURN = (
    "import sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end:\n"
    "    t = time.time()\n    while time.time() - t < 0.0075:\n        pass\n    time.sleep(0.0025)\n"
)


def guidellm_bodies(path: Path) -> tuple[BenchRequest, ...]:
    """The chat messages of every successful request of a guidellm report, in send order."""
    bench = json.loads(path.read_text())["benchmarks"][0]
    records = sorted(bench["requests"]["successful"], key=lambda r: r["request_start_time"])
    return tuple(
        BenchRequest(index=i, session=f"guidellm-{i}", messages=tuple(json.loads(r["request_args"])["body"]["messages"]),
                     max_tokens=int(r["output_tokens"]))
        for i, r in enumerate(records)
    )  # fmt: skip


async def fresh_connections(
    url: str, requests: Sequence[BenchRequest], offsets: Sequence[float], model: str, headers: dict[str, str]
) -> list[RequestResult]:
    """bench/client.py's send, one client with keep-alive off: every request opens its own TCP connection."""
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=120.0, trust_env=False, limits=limits) as client:
        start = time.perf_counter()

        async def one(request: BenchRequest, offset: float) -> RequestResult:
            await asyncio.sleep(max(0.0, start + offset - time.perf_counter()))
            return await send_one(
                client, url, request, model=model, headers=headers, start=start, scheduled=offset
            )

        return list(await asyncio.gather(*(one(r, o) for r, o in zip(requests, offsets, strict=True))))


async def probe(seeds: Sequence[int], bodies: tuple[BenchRequest, ...] | None) -> list[dict[str, Any]]:
    suite = standard(0)
    run = next(r for r in suite.runs if r.workload == "gsp")
    model = suite.fleet.model
    modes = [m for m in MODES if bodies is not None or m != "guidellm-bodies"]
    fleet = await Fleet.start(suite.fleet)
    rows: list[dict[str, Any]] = []
    try:
        for seed in seeds:
            requests = build("gsp", seed=seed, params=run.params).requests
            offsets = poisson_schedule(len(requests), run.rate, seed=seed)
            plan = [(c, m) for c in ("flotilla:default", SGLANG_BEST) for m in modes]
            random.Random(f"probe/{seed}").shuffle(plan)
            for name, mode in plan:
                contender = registry.parse(name)
                await contender.start(fleet.urls, model=model, kv_events=fleet.kv_event_endpoints())
                burner = None
                try:
                    await fleet.reset_prefix_caches()
                    if mode == "burner":
                        burner = subprocess.Popen([sys.executable, "-c", BURN, "120"])  # noqa: ASYNC220
                    if mode == "fresh-conn":
                        url = contender.base_url + "/chat/completions"
                        results = await fresh_connections(url, requests, offsets, model, contender.headers)
                    else:
                        sent = bodies if mode == "guidellm-bodies" and bodies is not None else requests
                        results, _ = await run_open_loop(base_url=contender.base_url, requests=sent[: len(offsets)],
                                                         offsets=offsets[: len(sent)], model=model,
                                                         headers=contender.headers)  # fmt: skip
                finally:
                    if burner is not None:  # only while the load runs
                        burner.kill()
                        burner.wait()
                    contender.stop()
                measured = sorted(results, key=lambda r: r.scheduled)[len(results) // 10 :]
                ttfts = [r.ttft if r.ok else math.inf for r in measured]
                row = {"seed": seed, "contender": name, "mode": mode, "p50": percentile_inf(ttfts, 50),
                       "p90": percentile_inf(ttfts, 90), "ok": sum(r.ok for r in results), "requests": len(results)}  # fmt: skip
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        fleet.stop()
    return rows


def summary(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Flotilla ÷ peer TTFT p90 per mode and seed."""
    p90 = {(r["seed"], r["contender"], r["mode"]): r["p90"] for r in rows}
    lines = []
    for mode in MODES:
        ratios = [p90[(s, "flotilla:default", mode)] / p90[(s, SGLANG_BEST, mode)]
                  for s in sorted({r["seed"] for r in rows}) if (s, "flotilla:default", mode) in p90]  # fmt: skip
        if ratios:
            lines.append(
                f"{mode}: Flotilla ÷ peer TTFT p90 per seed " + ", ".join(f"{x:.2f}" for x in ratios)
            )
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seeds", default="201,202", help="comma list of trace seeds (not the reported ones)"
    )
    parser.add_argument("--bodies", type=Path, default=None, help="a guidellm benchmarks.json to replay")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    bodies = guidellm_bodies(args.bodies) if args.bodies is not None else None
    rows = asyncio.run(probe([int(s) for s in args.seeds.split(",")], bodies))
    for line in summary(rows):
        print(line)
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
