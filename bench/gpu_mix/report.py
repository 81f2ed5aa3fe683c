"""``optimizer.json`` and ``report.md`` of the GPU-mix suite."""

from __future__ import annotations

import dataclasses
import statistics

import orjson

from bench.gpu_mix.runner import Case, MixResult, SolverTime


def to_json(result: MixResult) -> bytes:
    return orjson.dumps(dataclasses.asdict(result), option=orjson.OPT_INDENT_2)


def from_json(raw: bytes) -> MixResult:
    data = orjson.loads(raw)
    data["cases"] = [Case(**c) for c in data["cases"]]
    data["solver"] = [SolverTime(**s) for s in data["solver"]]
    return MixResult(**data)


def _mix(counts: dict[str, int]) -> str:
    return " + ".join(f"{n}×{g}" for g, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def render(result: MixResult) -> str:
    lines = [
        f"# GPU mix (Mélange) on simulated GPUs — `{result.suite}`",
        "",
        f"Command: `{result.command}`",
        "",
        f"GPU types: {', '.join(result.gpus)}; prices ($/h): "
        + ", ".join(f"{g} {p:.2f}" for g, p in result.prices.items()),
        f"Buckets: prompt ≤ {result.grid['input_bounds']} × output ≤ {result.grid['output_bounds']} tokens. "
        f"Plans fill each GPU to at most {result.headroom:.0%} of its profiled capacity. "
        f"Wall time {result.wall_seconds:.0f} s.",
        "",
        "Mix = the optimizer's plan; single = the cheapest fleet of one GPU type from the same profiles. Both are "
        "run on the simulated fleet (engine_sim's scheduler per replica); attainment = share of requests within "
        "the SLO, worst over seeds.",
        "",
        "| dataset | SLO | req/s | mix | $/h | best single | $/h | saving | attainment mix | attainment single |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in result.cases:
        single = f"{c.single_count}×{c.single_gpu}" if c.single_gpu else "none"
        single_cost = "–" if c.single_cost is None else f"{c.single_cost:.2f}"
        lines.append(
            f"| {c.dataset} | {c.slo} | {c.rate:g} | {_mix(c.counts)} | {c.cost:.2f} | {single} | {single_cost} | "
            f"{_pct(c.saving)} | {_pct(c.attainment)} | {_pct(c.single_attainment)} |"
        )
    live = [c for c in result.cases if c.live_attainment is not None]
    if live:
        lines += [
            "",
            "Served fleets (engine_sim processes over HTTP, the plan's dispatch, first seed):",
            "",
            "| dataset | SLO | req/s | mix | attainment offline | attainment served |",
            "|---|---|---|---|---|---|",
        ]
        lines += [f"| {c.dataset} | {c.slo} | {c.rate:g} | {_mix(c.counts)} | {_pct(c.attainment)} | "
                  f"{_pct(c.live_attainment)} |" for c in live]  # fmt: skip
    passed = sum(c.attainment >= 0.99 for c in result.cases)
    savings = [c.saving for c in result.cases if c.saving is not None]
    lines += [
        "",
        f"Plans meeting 99 % attainment on the simulated fleet: {passed}/{len(result.cases)}. "
        + (f"Saving against the best single type: median {statistics.median(savings):.0%}, max {max(savings):.0%}; "
           f"the mix wins in {sum(s > 1e-9 for s in savings)} of {len(savings)} cases." if savings else ""),
        "",
        "## Solver time (synthetic large instances, 16 slices per bucket, CBC via PuLP)",
        "",
        "| buckets | GPU types | seconds (3 seeds) |",
        "|---|---|---|",
    ]  # fmt: skip
    for s in result.solver:
        lines.append(f"| {s.buckets} | {s.gpus} | {', '.join(f'{t:.2f}' for t in s.seconds)} |")
    lines += [
        "",
        "## Profiles (max req/s per engine within the SLO; rows: prompt bucket, columns: output bucket)",
        "",
    ]
    for gpu, tables in result.profiles.items():
        for slo, rows in tables.items():
            cells = "; ".join(" ".join(f"{v:.3g}" for v in r) for r in rows)
            lines.append(f"- {gpu} {slo}: {cells}")
    return "\n".join(lines) + "\n"
