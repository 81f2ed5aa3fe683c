"""Is an engine-side TTFT p90 of 0.8× the best peer attainable by *any* router on the standard suite's fleet?

``python -m bench.routing_bound`` replays the standard suite's shared-prefix workloads (same parameters,
rates, think times and seeds) in virtual time (:mod:`bench.routing_virtual`) through Flotilla's real
``ttft-cost`` router, models of the peers, sanity baselines, two clairvoyant routers and a rigorous lower
bound, and prints per workload the median over seeds of each policy's TTFT p90 (simulated ms) and its ratio to
the best peer, with 95 % bootstrap intervals paired by seed (:mod:`bench.stats`), plus hit rates.

The lower bound (``isolated``) is each request alone on an idle engine holding the infinite-cache oracle's
prefix; its p90 is below every router's on the open-loop workloads (a percentile is monotone in each request's
value); on the closed-loop ones the send order depends on the run, so there it is indicative only.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict
from pathlib import Path

import click

from bench.routing_policies import Clairvoyant, ConsistentHash, FlotillaPolicy, SGLangCacheAware
from bench.routing_virtual import Policy, RunResult, isolated_lower_bound, make_trace, p90, simulate
from bench.stats import Estimate, latency_estimate, latency_ratio, median, scalar_estimate
from bench.suites import REPORTED_SEEDS, TUNING_SEEDS, standard

ENGINES = 8
WORKLOADS = ("gsp", "tenants", "mixed", "multiturn", "agentic")
#: the peers the served suite runs at their swept best, and SGLang's defaults
PEERS = ("sglang:cache_aware(0.2/32/1.5)", "sglang:cache_aware(0.3/64/1.5)", "vllm-router:consistent_hash")
LOWER_BOUND = "isolated (lower bound)"


def policies(seed: int) -> list[Callable[[], Policy]]:
    return [
        lambda: FlotillaPolicy(ENGINES, strategy="default", seed=seed),
        # the approximate index bounded per engine at the engine's usable KV blocks: it forgets what the
        # engine's LRU must have evicted (kvcache.MemoryIndex's endpoint_capacity)
        lambda: FlotillaPolicy(ENGINES, strategy="default", seed=seed, endpoint_capacity=1023),
        lambda: FlotillaPolicy(ENGINES, strategy="least-request", seed=seed),
        lambda: FlotillaPolicy(ENGINES, strategy="round-robin", seed=seed),
        lambda: SGLangCacheAware(ENGINES, cache_threshold=0.2, balance_abs=32, balance_rel=1.5),
        lambda: SGLangCacheAware(ENGINES, cache_threshold=0.3, balance_abs=64, balance_rel=1.5),
        lambda: ConsistentHash(ENGINES),
        lambda: Clairvoyant(),
        lambda: Clairvoyant(charge_prefill=True),
    ]


def run_grid(workloads: Sequence[str], seeds: Sequence[int], log: Callable[[str], None]) -> list[RunResult]:
    runs = {r.workload: r for r in standard(0).runs}
    out: list[RunResult] = []
    for seed in seeds:
        for name in workloads:
            trace = make_trace(runs[name], seed)
            lb = isolated_lower_bound(trace)
            out.append(RunResult(name, LOWER_BOUND, lb, math.nan, math.nan, [], seed=seed))
            for make in policies(seed):
                result = simulate(trace, make(), engines=ENGINES)
                result.seed = seed
                out.append(result)
                log(f"seed {seed} {name:9s} {result.policy:32s} p90 {p90(result.ttfts) * 1e3:7.1f} ms "
                    f"hit {result.hit_rate:.3f} imbalance {result.imbalance:.2f}")  # fmt: skip
    return out


def _fmt(e: Estimate, scale: float = 1.0, digits: int = 0) -> str:
    if math.isnan(e.value):
        return "–"
    return f"{e.value * scale:.{digits}f} [{e.low * scale:.{digits}f}, {e.high * scale:.{digits}f}]"


def report(results: Sequence[RunResult], seeds: Sequence[int]) -> str:
    lines: list[str] = []
    for name in dict.fromkeys(r.workload for r in results):
        mine = [r for r in results if r.workload == name]
        by: dict[str, list[RunResult]] = {}
        for r in mine:
            by.setdefault(r.policy, []).append(r)
        samples = {p: [r.ttfts for r in sorted(rs, key=lambda r: r.seed)] for p, rs in by.items()}
        peer = min((p for p in PEERS if p in samples), key=lambda p: median([p90(s) for s in samples[p]]))
        lines += [
            f"`{name}` (seeds {', '.join(map(str, seeds))}; best peer: `{peer}`)",
            "",
            "| policy | TTFT p90 (sim ms) | ÷ best peer | ≤ 0.8×, interval < 1 | hit rate % | imbalance "
            "| histogram p90, all requests (sim ms) |",
            "|---|---|---|---|---|---|---|",
        ]
        for p, s in samples.items():
            ratio = latency_ratio(s, samples[peer], 90)
            goal = "met" if ratio.value <= 0.8 and ratio.high < 1.0 else "missed"
            hits = [r.hit_rate for r in by[p]]
            hit = "–" if p == LOWER_BOUND else _fmt(scalar_estimate(hits), 100)
            imbalance = "–" if p == LOWER_BOUND else f"{median([r.imbalance for r in by[p]]):.2f}"
            hist = "–" if p == LOWER_BOUND else f"{median([r.histogram_p90 for r in by[p]]) * 1e3:.0f}"
            lines.append(
                f"| `{p}` | {_fmt(latency_estimate(s, 90), 1e3, 1)} | {_fmt(ratio, 1, 2)} | "
                f"{'–' if p in (peer, LOWER_BOUND) else goal} | {hit} | {imbalance} | {hist} |"
            )
        lines.append("")
    return "\n".join(lines)


def cli_run(
    *, quick: bool, out: Path, seed: int, seeds: int | None, workloads: Collection[str] | None
) -> Path:
    """``flotilla bench --suite routing-bound``: report.md and results.json in ``out``; seed 0 = the standard
    suite's reported seeds, else ``seeds`` (default 5) seeds from ``seed``; ``--quick``: one seed of gsp."""
    chosen = list(REPORTED_SEEDS) if seed == 0 else list(range(seed, seed + (seeds or len(REPORTED_SEEDS))))
    chosen = chosen[: 1 if quick else seeds or len(chosen)]
    names = [w for w in WORKLOADS if w in workloads] if workloads else (["gsp"] if quick else list(WORKLOADS))
    names += sorted(set(workloads or ()) - set(WORKLOADS))
    unknown = sorted(set(names) - set(WORKLOADS))
    if unknown:
        raise click.UsageError(
            f"unknown workload(s) {unknown} for routing-bound; choose from {', '.join(WORKLOADS)}"
        )
    results = run_grid(names, chosen, lambda line: click.echo(line, err=True))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps([asdict(r) for r in results], default=str))
    command = "flotilla bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 else "flotilla bench"
    path = out / "report.md"
    path.write_text(f"# Routing bound (virtual time)\n\n`{command.strip()}`\n\n{report(results, chosen)}")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.routing_bound", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default=",".join(map(str, REPORTED_SEEDS)),
                        help=f"comma-separated trace seeds (reported: the standard suite's; tuning: {TUNING_SEEDS})")  # fmt: skip
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--out", help="write every run's TTFTs and hit rate as JSON here")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        parser.error(f"--seeds must be integers, got {args.seeds!r}")
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = sorted(set(workloads) - set(WORKLOADS))
    if unknown or not seeds:
        parser.error(
            f"unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}" if unknown else "no seeds"
        )
    results = run_grid(workloads, seeds, lambda line: print(line, file=sys.stderr, flush=True))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump([asdict(r) for r in results], fh, default=str)
    print(report(results, seeds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
