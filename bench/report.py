"""The Markdown report: one table per workload, ratios of Flotilla against every contender, the overhead table,
and a generated list of where Flotilla is behind a peer (stated plainly, never hand-edited).

Pure functions of a :class:`~bench.runner.SuiteResult`, so rendering is unit-testable without running anything.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from bench.overhead import OverheadRow
from bench.results import RunSummary
from bench.runner import SuiteResult, WorkloadInfo

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


def workload_section(info: WorkloadInfo, runs: Sequence[RunSummary], plots: Sequence[str]) -> list[str]:
    out = [f"### Workload `{info.name}`", "", info.description + ".", ""]
    ws = (
        f"working set {info.working_set_tokens:,} tokens = {num(info.working_set_vs_engine, '{:.2f}')}× one "
        f"engine's KV cache, {pct(info.working_set_vs_cluster)} of the cluster's"
        if info.working_set_tokens
        else "no intended sharing (control)"
    )
    out += [
        f"{info.requests} requests, Poisson {info.rate:g} req/s, {info.prompt_tokens:,} prompt tokens; {ws}; "
        f"infinite-cache oracle hit rate **{pct(info.oracle_hit_rate)}**"
        + (
            f" (an LRU cache the size of the whole cluster's KV: {pct(info.bounded_oracle_hit_rate)})."
            if not math.isnan(info.bounded_oracle_hit_rate)
            else "."
        ),
        "",
    ]
    header = ["contender", "ok", "TTFT p50", "p90", "p99 (ms)", "ITL p50", "p90 (ms)", "e2e p50 (ms)",
              "out tok/s", "goodput req/s", "hit rate", "hit ÷ oracle", "imbalance", "load"]  # fmt: skip
    rows = []
    for r in runs:
        if r.skipped:
            rows.append([f"`{r.contender}`", f"skipped: {r.skipped}", *["–"] * (len(header) - 2)])
            continue
        rows.append([
            f"`{r.contender}`", f"{r.ok}/{r.requests}", ms(r.ttft_p50), ms(r.ttft_p90), ms(r.ttft_p99),
            ms(r.itl_p50), ms(r.itl_p90), ms(r.e2e_p50), num(r.output_tok_s, "{:.0f}"),
            num(r.goodput_req_s, "{:.2f}"), pct(r.hit_rate), pct(r.hit_vs_oracle), num(r.imbalance, "{:.2f}"),
            num(r.load_avg, "{:.1f}"),
        ])  # fmt: skip
    out += table(header, rows)
    lags = [r.max_send_lag for r in runs if not r.skipped and not math.isnan(r.max_send_lag)]
    if lags:
        out += [
            "",
            f"Load generator health: requests left at most {max(lags) * 1000:.1f} ms after their scheduled time.",
        ]
    ref = reference_for(runs)
    if ref is not None:
        out += ["", f"Ratios, `{ref.contender}` against each contender (> 1 means Flotilla is better):", ""]
        rrows = []
        for r in runs:
            if r is ref or r.skipped:
                continue
            rrows.append([
                f"`{r.contender}`", ratio(r.ttft_p50, ref.ttft_p50), ratio(r.ttft_p90, ref.ttft_p90),
                ratio(ref.goodput_req_s, r.goodput_req_s), ratio(ref.output_tok_s, r.output_tok_s),
                ratio(ref.hit_rate, r.hit_rate),
            ])  # fmt: skip
        out += table(
            ["vs", "TTFT p50 (theirs ÷ ours)", "TTFT p90 (theirs ÷ ours)", "goodput (ours ÷ theirs)",
             "throughput (ours ÷ theirs)", "hit rate (ours ÷ theirs)"],
            rrows,
        )  # fmt: skip
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


def behind(result: SuiteResult) -> list[str]:
    """Every place a peer beats Flotilla's reference strategy by more than :data:`MARGIN`."""
    lines = []
    for info in result.workloads:
        runs = [r for r in result.runs if r.workload == info.name]
        ref = reference_for(runs)
        if ref is None:
            continue
        for r in runs:
            if r.skipped or r.contender.startswith("flotilla:") or r.contender == "direct":
                continue
            checks = [
                ("TTFT p90", ref.ttft_p90, r.ttft_p90, True, ms),
                ("goodput", ref.goodput_req_s, r.goodput_req_s, False, lambda v: num(v, "{:.2f} req/s")),
                ("hit rate", ref.hit_rate, r.hit_rate, False, pct),
                ("success rate", ref.success_rate, r.success_rate, False, pct),
            ]
            for metric, ours, theirs, lower_better, fmt in checks:
                if math.isnan(ours) or math.isnan(theirs):
                    continue
                worse = ours > theirs * (1 + MARGIN) if lower_better else ours < theirs * (1 - MARGIN)
                if worse:
                    unit = " ms" if fmt is ms else ""
                    lines.append(
                        f"- `{info.name}`: {metric} of `{ref.contender}` is {fmt(ours)}{unit} vs "
                        f"{fmt(theirs)}{unit} for `{r.contender}`."
                    )
    direct = next((o for o in result.overhead if o.contender == "direct" and not o.skipped), None)
    ours_rows = [o for o in result.overhead if o.contender.startswith("flotilla:") and not o.skipped]
    if direct is not None and ours_rows:
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
                    f"- overhead: `{mine.contender}` {mine.chunks_s:.0f} chunks/s vs {o.chunks_s:.0f} for "
                    f"`{o.contender}`."
                )
    return lines


def best_of(result: SuiteResult) -> list[str]:
    """Per workload, Flotilla's best strategy against the best peer (by TTFT p90), so a weak default profile
    does not hide a strong strategy, nor a strong strategy a weak default."""
    rows = []
    for info in result.workloads:
        runs = [r for r in result.runs if r.workload == info.name and not r.skipped and r.ok == r.requests]
        ours = [r for r in runs if r.contender.startswith("flotilla:")]
        peers = [r for r in runs if r.contender.startswith(("sglang:", "vllm-router:"))]
        if not ours or not peers:
            continue
        a = min(ours, key=lambda r: r.ttft_p90)
        b = min(peers, key=lambda r: r.ttft_p90)
        rows.append([
            f"`{info.name}`", f"`{a.contender}`", ms(a.ttft_p90), pct(a.hit_rate), f"`{b.contender}`",
            ms(b.ttft_p90), pct(b.hit_rate), ratio(b.ttft_p90, a.ttft_p90),
        ])  # fmt: skip
    if not rows:
        return []
    header = ["workload", "best Flotilla strategy", "TTFT p90 (ms)", "hit rate", "best peer", "TTFT p90 (ms)",
              "hit rate", "peer ÷ Flotilla TTFT p90"]  # fmt: skip
    return [
        "### Best of each (among contenders that completed every request)",
        "",
        *table(header, rows),
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
        f"Fleet: {fleet['engines']} simulated engines (`flotilla sim`, preset `{fleet['preset']}`, time scale "
        f"{fleet['time_scale']}, seed {fleet['seed']}), {kv}. Every contender runs the identical trace on the same "
        "engines, with every engine's prefix cache reset before it. Latencies are wall-clock, measured by an "
        "open-loop streaming client from each request's scheduled send time. Hit rates are the engines' own "
        "counters (Δ`prefix_cache_hits` ÷ Δ`prefix_cache_queries`); imbalance is max ÷ mean requests per engine; "
        "load is the machine's 1-minute load average when the run started (other work shares this machine); "
        f"goodput counts requests with TTFT ≤ {fleet.get('slo_ttft', 2.0):g} s and mean ITL ≤ "
        f"{fleet.get('slo_itl', 0.1) * 1000:g} ms in simulated time (× the time scale in wall time).",
        "",
    ]
    out += [f"> note: {n}" for n in result.notes] + ([""] if result.notes else [])
    for info in result.workloads:
        runs = [r for r in result.runs if r.workload == info.name]
        out += workload_section(info, runs, plots.get(info.name, []))
    out += best_of(result)
    out += overhead_section(result.overhead)
    out += [f"![overhead]({p})" for p in plots.get("overhead", [])] + [""]
    lagging = behind(result)
    out += ["### Where Flotilla is behind", ""]
    out += lagging or [
        "Nowhere by more than 5 % on TTFT p90, goodput, hit rate, success rate or overhead in this run."
    ]
    out.append("")
    return "\n".join(out)
