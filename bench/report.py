"""The Markdown report: one table per workload, ratios of Flotilla against every contender, the overhead table,
and a generated list of where Flotilla is behind a peer (stated plainly, never hand-edited).

Pure functions of a :class:`~bench.runner.SuiteResult`, so rendering is unit-testable without running anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from bench.aggregate import PEER_PREFIXES, WorkloadFigures, figures, goals
from bench.overhead import OverheadRow
from bench.results import RunSummary
from bench.runner import SuiteResult, WorkloadInfo
from bench.stats import Estimate, verdict

REFERENCE = "flotilla:default"
#: relative margin below which two numbers are reported as level rather than one being "behind"
MARGIN = 0.05


def ms(seconds: float) -> str:
    return (
        "–" if math.isnan(seconds) else f"{seconds * 1000:.0f}" if seconds >= 0.1 else f"{seconds * 1000:.1f}"
    )


def num(value: float, fmt: str = "{:.1f}") -> str:
    return "–" if math.isnan(value) else fmt.format(value)


def pct(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.0%}"


def ratio(a: float, b: float) -> str:
    if math.isnan(a) or math.isnan(b) or b == 0:
        return "–"
    return f"{a / b:.2f}×"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def reference_for(runs: Sequence[RunSummary]) -> RunSummary | None:
    """Flotilla's default profile if it ran, else the first Flotilla strategy that did."""
    ran = [r for r in runs if not r.skipped and r.contender.startswith("flotilla:")]
    return next((r for r in ran if r.contender == REFERENCE), ran[0] if ran else None)


def est(e: Estimate, fmt: Callable[[float], str] = ms) -> str:
    """``median [low, high]``."""
    if math.isnan(e.value):
        return "–"
    if math.isnan(e.low):
        return fmt(e.value)
    return f"{fmt(e.value)} [{fmt(e.low)}, {fmt(e.high)}]"


def times(value: float) -> str:
    return "∞" if math.isinf(value) else "–" if math.isnan(value) else f"{value:.2f}×"


def all_figures(result: SuiteResult) -> dict[str, WorkloadFigures]:
    """Every workload's figures, computed once per render (the bootstrap is the costly part)."""
    engines = int(result.fleet.get("engines", 0))
    return {
        info.name: figures(
            info.name,
            [r for r in result.runs if r.workload == info.name],
            engines=engines,
            sharing=info.working_set_tokens > 0,
        )
        for info in result.workloads
    }


def workload_section(
    info: WorkloadInfo, runs: Sequence[RunSummary], plots: Sequence[str], *, engines: int = 0,
    fig: WorkloadFigures | None = None,
) -> list[str]:  # fmt: skip
    out = [f"### Workload `{info.name}`", "", info.description + ".", ""]
    ws = (
        f"working set {info.working_set_tokens:,} tokens = {num(info.working_set_vs_engine, '{:.2f}')}× one "
        f"engine's KV cache, {pct(info.working_set_vs_cluster)} of the cluster's"
        if info.working_set_tokens
        else "no intended sharing (control)"
    )
    seeds = sorted({r.seed for r in runs})
    out += [
        f"{info.requests} requests per seed, {info.rate:g} {'sessions' if 'session' in info.description else 'req'}/s"
        f", {info.prompt_tokens:,} prompt tokens (first seed); {ws}; infinite-cache oracle hit rate "
        f"**{pct(info.oracle_hit_rate)}**"
        + (
            f" (an LRU cache the size of the whole cluster's KV: {pct(info.bounded_oracle_hit_rate)})."
            if not math.isnan(info.bounded_oracle_hit_rate)
            else "."
        )
        + f" Seeds {', '.join(map(str, seeds))}.",
        "",
    ]
    if fig is None:
        fig = figures(info.name, runs, engines=engines, sharing=info.working_set_tokens > 0)
    header = ["contender", "n", "ok", "TTFT p50 (ms)", "TTFT p90 (ms)", "TTFT p99 (ms)", "engine TTFT p90 (sim ms)",
              "goodput req/s", "hit rate", "hit ÷ oracle", "imbalance", "note"]  # fmt: skip
    rows = []
    for r in fig.rows:
        if r.skipped:
            rows.append([f"`{r.contender}`", "–", f"skipped: {r.skipped}", *["–"] * (len(header) - 3)])
            continue
        rows.append([
            f"`{r.contender}`", str(r.n), f"{r.ok}/{r.requests}", est(r.ttft_p50), est(r.ttft_p90),
            est(r.ttft_p99), est(r.engine_ttft_p90), est(r.goodput, lambda v: f"{v:.2f}"), est(r.hit_rate, pct), pct(r.hit_vs_oracle),
            num(r.imbalance, "{:.2f}"), r.inert,
        ])  # fmt: skip
    out += table(header, rows)
    lags = [r.max_send_lag for r in runs if not r.skipped and not math.isnan(r.max_send_lag)]
    if lags:
        out += ["", f"Load generator health: requests left at most {max(lags) * 1000:.1f} ms after their "
                    "scheduled time (open loop) or their previous turn (sessions)."]  # fmt: skip
    if fig.reference and fig.ratios:
        out += ["", f"`{fig.reference}` against each contender, median [95 % interval] over seeds, paired by "
                    "seed; > 1 means Flotilla is better; a verdict only when the interval excludes 1:", ""]  # fmt: skip
        rrows = []
        for q in fig.ratios:
            v = q.verdicts()
            rrows.append([
                f"`{q.contender}`", f"{est(q.ttft_p50, times)} {v['ttft_p50']}",
                f"{est(q.ttft_p90, times)} {v['ttft_p90']}", f"{est(q.goodput, times)} {v['goodput']}",
                f"{est(q.hit_rate, times)} {v['hit_rate']}",
                f"{est(q.engine_ttft_p90, times)} {v['engine_ttft_p90']}",
            ])  # fmt: skip
        out += table(["vs", "TTFT p50 (theirs ÷ ours)", "TTFT p90 (theirs ÷ ours)", "goodput (ours ÷ theirs)",
                      "hit rate (ours ÷ theirs)", "engine TTFT p90 (theirs ÷ ours)"], rrows)  # fmt: skip
    out += [""] + [f"![{info.name}]({p})" for p in plots] + [""]
    return out


def overhead_section(rows: Sequence[OverheadRow]) -> list[str]:
    if not rows:
        return []
    direct = next((r for r in rows if r.contender == "direct" and not r.skipped), None)
    header = ["contender", "pinned", "e2e p50 (ms)", "p99 (ms)", "added p50 (ms)", "added p99 (ms)",
              "req/s", "÷ direct", "chunks/s", "÷ direct", "errors"]  # fmt: skip
    body = []
    for r in rows:
        if r.skipped:
            body.append([f"`{r.contender}`", f"skipped: {r.skipped}", *["–"] * (len(header) - 2)])
            continue
        body.append([
            f"`{r.contender}`", "yes" if r.pinned else "no", num(r.latency_p50 * 1000, "{:.2f}"),
            num(r.latency_p99 * 1000, "{:.2f}"), num(r.added_p50 * 1000, "{:+.2f}"),
            num(r.added_p99 * 1000, "{:+.2f}"), num(r.req_s, "{:.0f}"),
            ratio(r.req_s, direct.req_s) if direct else "–", num(r.chunks_s, "{:.0f}"),
            ratio(r.chunks_s, direct.chunks_s) if direct else "–", str(r.errors),
        ])  # fmt: skip
    return [
        "### Gateway overhead (zero-latency engines)",
        "",
        "Sequential requests for added latency, a closed loop for requests/s (1 output token) and for streamed "
        "chunks/s. The load generator and the simulated engines are Python processes on the same machine, so "
        "`direct` is the ceiling of the apparatus; routers are compared by their ratio to it.",
        "",
        *table(header, body),
        "",
    ]


def behind(result: SuiteResult, figs: dict[str, WorkloadFigures] | None = None) -> list[str]:
    """Every ratio against a peer whose interval lies wholly on the losing side (a *loss*), plus overhead."""
    lines = []
    figs = figs if figs is not None else all_figures(result)
    for info in result.workloads:
        for q in figs[info.name].ratios:
            if not q.contender.startswith(PEER_PREFIXES):
                continue
            for metric, label in (("ttft_p90", "TTFT p90"), ("engine_ttft_p90", "engine-side TTFT p90"),
                                  ("goodput", "goodput"), ("hit_rate", "hit rate")):  # fmt: skip
                e = getattr(q, metric)
                if verdict(e) == "loss":
                    lines.append(f"- `{info.name}`: {label} loss against `{q.contender}`: {est(e, times)}.")
    lines += _overhead_behind(result)
    return lines


def _overhead_behind(result: SuiteResult) -> list[str]:
    lines: list[str] = []
    direct = next((o for o in result.overhead if o.contender == "direct" and not o.skipped), None)
    ours_rows = [o for o in result.overhead if o.contender.startswith("flotilla:") and not o.skipped]
    if direct is None or not ours_rows:
        return lines
    mine = ours_rows[0]
    for o in result.overhead:
        if o.skipped or o.contender.startswith("flotilla:") or o.contender == "direct":
            continue
        if mine.latency_p50 > o.latency_p50 * (1 + MARGIN):
            lines.append(
                f"- overhead: `{mine.contender}` adds {mine.added_p50 * 1000:+.2f} ms at p50 vs "
                f"{o.added_p50 * 1000:+.2f} ms for `{o.contender}`."
            )
        if mine.req_s < o.req_s * (1 - MARGIN):
            lines.append(
                f"- overhead: `{mine.contender}` {mine.req_s:.0f} req/s vs {o.req_s:.0f} for `{o.contender}`."
            )
        if mine.chunks_s < o.chunks_s * (1 - MARGIN):
            lines.append(
                f"- overhead: `{mine.contender}` {mine.chunks_s:.0f} chunks/s vs {o.chunks_s:.0f} for `{o.contender}`."
            )
    return lines


def best_of(result: SuiteResult, figs: dict[str, WorkloadFigures] | None = None) -> list[str]:
    """Per workload, Flotilla's reference against the best peer configuration (lowest median TTFT p90 among
    peers whose routing did something) and the issue's goals, met or not."""
    rows = []
    figs = figs if figs is not None else all_figures(result)
    for info in result.workloads:
        fig = figs[info.name]
        for goal, measured, met in goals(fig, info.oracle_hit_rate):
            state = "–" if met is None else "met" if met else "**missed**"
            rows.append([f"`{info.name}`", f"`{fig.reference}`", goal, measured, state])
    if not rows:
        return []
    return [
        "### Goals against the best peer configuration",
        "",
        "The best peer configuration per workload is the peer row with the lowest median TTFT p90 among those "
        "whose routing did something; ratios are ours ÷ theirs here (TTFT: lower is better) with the 95 % "
        "interval; goodput counts as met when its interval includes 1 or lies above it.",
        "",
        *table(["workload", "Flotilla", "goal", "measured", ""], rows),
        "",
    ]


def render(result: SuiteResult, plots: dict[str, list[str]], *, heading: str = "##") -> str:
    """The whole report; ``plots`` maps a workload name (or "overhead") to image paths relative to the report."""
    fleet = result.fleet
    blocks = fleet.get("num_gpu_blocks")
    kv = (
        f"{blocks:,} KV blocks × {fleet['block_size']} tokens = {blocks * fleet['block_size']:,} tokens per engine"
        if blocks
        else "default KV capacity"
    )
    out = [
        f"{heading} flotilla bench — {result.suite} suite",
        "",
        f"Command: `{result.command}`",
        "",
        f"Fleet: {fleet['engines']} simulated engines in {fleet.get('processes', 1)} `flotilla sim` process(es) "
        f"(preset `{fleet['preset']}`, time scale {fleet['time_scale']}, engine seed {fleet['seed']}), {kv}. "
        f"Trace seeds {', '.join(map(str, result.seeds or [fleet['seed']]))}: each seed is its own trace "
        "(workload, arrivals, think times), every contender replays it once, in a shuffled order per seed and "
        "workload, with every engine's prefix cache reset before it. Latencies are wall-clock, measured by a "
        "streaming client from each request's scheduled send time (open loop) or its actual send (closed-loop "
        f"sessions); the first {result.warmup:.0%} of each trace's requests are a warm-up left out of latency "
        "figures, and failed or timed-out requests count as +∞ (∞ in a percentile means more failures than its "
        "tail). Every figure is the median over seeds with a 95 % two-level percentile bootstrap interval "
        "(seeds, then requests within each seed; bench/stats.py says why); n is the measured requests summed over "
        "seeds. *Engine TTFT p90* is the engines' own `vllm:time_to_first_token_seconds` histogram (all requests "
        "of a run, the fleet's buckets summed, Prometheus interpolation) in the simulator's simulated seconds: "
        "the GPU's view of the routing, free of any router's or the client's CPU cost on this shared machine; "
        "its interval is a bootstrap over seeds only. Hit rates are the engines' own "
        "counters (Δ`prefix_cache_hits` ÷ Δ`prefix_cache_queries`); imbalance is max ÷ mean requests per engine; "
        "load is the machine's 1-minute load average when the run started (other work shares this machine); "
        f"goodput counts requests with TTFT ≤ {fleet.get('slo_ttft', 2.0):g} s and mean ITL ≤ "
        f"{fleet.get('slo_itl', 0.1) * 1000:g} ms in simulated time (× the time scale in wall time).",
        "",
    ]
    out += [f"> note: {n}" for n in result.notes] + ([""] if result.notes else [])
    figs = all_figures(result)
    for info in result.workloads:
        runs = [r for r in result.runs if r.workload == info.name]
        out += workload_section(info, runs, plots.get(info.name, []), fig=figs[info.name])
    out += best_of(result, figs)
    out += overhead_section(result.overhead)
    out += [f"![overhead]({p})" for p in plots.get("overhead", [])] + [""]
    lagging = behind(result, figs)
    out += ["### Where Flotilla is behind", ""]
    out += lagging or ["No loss (an interval wholly on the losing side) on TTFT p90, goodput or hit rate."]
    out.append("")
    return "\n".join(out)
