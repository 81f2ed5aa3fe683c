"""The cross-check's figures and report (pure: no I/O): per tool × contender, the Flotilla ÷ peer ratio under each
tool, and whether the two tools agree.

"Agree" is decided on the ratio, not on absolute latencies: the two tools time from different instants
(``flotilla bench`` from each request's *scheduled* send, guidellm from its *actual* send) and draw different
traces and prompt texts, so their absolute TTFTs may differ; what a reader takes from the routing tables is
Flotilla ÷ peer, and that is what an independent tool must reproduce. The ratios agree when their 95 %
intervals overlap (bench/stats.py: a two-level bootstrap over rounds and requests, paired by round). The
tool-vs-tool ratio per contender (guidellm ÷ flotilla bench) is shown too, to say how far the absolute
figures differ and for whom.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from bench.stats import Estimate, latency_estimate, latency_ratio, median, scalar_estimate, scalar_ratio

TOOLS = ("flotilla-bench", "guidellm")


@dataclass
class XRun:
    """One tool driving one contender in one round."""

    tool: str
    contender: str
    seed: int
    position: int  # place in the round's shuffled order
    requests: int
    ok: int
    #: TTFT (s) after the warm-up, in send order; None = failed (+inf)
    ttft_samples: list[float | None]
    #: the tool's own summary TTFT percentiles (s): guidellm's report, or flotilla bench's RunSummary
    reported_p50: float
    reported_p90: float
    req_s: float
    hit_rate: float
    #: prompt tokens per request as the engines counted them (Δ counters): the prompt shape each tool sent
    engine_prompt_tokens: float
    load_avg: float = math.nan
    #: the tool's load-generator health: the largest actual − scheduled send time (s)
    send_lag: float = math.nan
    #: p90 of the engines' own TTFT histogram (simulated s): the routing's effect without any process's CPU cost
    engine_ttft_p90: float = math.nan
    #: CPU seconds the load generator (all its processes) and the router process spent during the run
    tool_cpu_s: float = math.nan
    router_cpu_s: float = math.nan
    #: seconds the router's threads were runnable but waiting for a CPU during the run (bench/crosscheck_cpu.py)
    router_wait_s: float = math.nan

    def ttfts(self) -> list[float]:
        return [math.inf if v is None else v for v in self.ttft_samples]


@dataclass
class XCell:
    tool: str
    contender: str
    rounds: int
    n: int
    ok: int
    requests: int
    p50: Estimate
    p90: Estimate
    reported_p50: float
    reported_p90: float
    req_s: Estimate
    hit_rate: float
    engine_prompt_tokens: float
    send_lag: float
    engine_ttft_p90: Estimate
    tool_cpu_s: float
    router_cpu_s: float
    router_wait_s: float = math.nan


@dataclass
class XRatio:
    """ours ÷ peer under one tool (TTFT: < 1 is better for ours; throughput: > 1 is better)."""

    tool: str
    p50: Estimate
    p90: Estimate
    req_s: Estimate
    engine_ttft_p90: Estimate  # ours ÷ peer of the engines' own TTFT p90


@dataclass
class XReport:
    ours: str
    peer: str
    cells: list[XCell] = field(default_factory=list)
    ratios: list[XRatio] = field(default_factory=list)
    #: per contender: guidellm ÷ flotilla bench TTFT p50 and p90 (paired by round)
    tool_vs_tool: dict[str, tuple[Estimate, Estimate]] = field(default_factory=dict)
    agree_p50: bool = False
    agree_p90: bool = False
    agree_req_s: bool = False
    agree_engine: bool = False


def _rounds(runs: Sequence[XRun], tool: str, contender: str, seeds: Sequence[int]) -> list[XRun]:
    by_seed = {r.seed: r for r in runs if r.tool == tool and r.contender == contender}
    return [by_seed[s] for s in seeds if s in by_seed]


def overlap(a: Estimate, b: Estimate) -> bool:
    if any(math.isnan(v) for v in (a.low, a.high, b.low, b.high)):
        return False
    return a.low <= b.high and b.low <= a.high


def analyse(runs: Sequence[XRun], *, ours: str, peer: str) -> XReport:
    """Cells, ratios and agreement over the rounds in which both contenders ran under both tools."""
    seeds = sorted({r.seed for r in runs})
    complete = [s for s in seeds if all(_rounds(runs, t, c, [s]) for t in TOOLS for c in (ours, peer))]
    report = XReport(ours=ours, peer=peer)
    for tool in TOOLS:
        for contender in (ours, peer):
            rs = _rounds(runs, tool, contender, complete)
            samples = [r.ttfts() for r in rs]
            report.cells.append(XCell(
                tool=tool, contender=contender, rounds=len(rs), n=sum(len(s) for s in samples),
                ok=sum(r.ok for r in rs), requests=sum(r.requests for r in rs),
                p50=latency_estimate(samples, 50), p90=latency_estimate(samples, 90),
                reported_p50=median([r.reported_p50 for r in rs]), reported_p90=median([r.reported_p90 for r in rs]),
                req_s=scalar_estimate([r.req_s for r in rs]), hit_rate=median([r.hit_rate for r in rs]),
                engine_prompt_tokens=median([r.engine_prompt_tokens for r in rs]),
                send_lag=median([r.send_lag for r in rs]),
                engine_ttft_p90=scalar_estimate([r.engine_ttft_p90 for r in rs]),
                tool_cpu_s=median([r.tool_cpu_s for r in rs]), router_cpu_s=median([r.router_cpu_s for r in rs]),
                router_wait_s=median([r.router_wait_s for r in rs]),
            ))  # fmt: skip
        a = [r.ttfts() for r in _rounds(runs, tool, ours, complete)]
        b = [r.ttfts() for r in _rounds(runs, tool, peer, complete)]
        thr_a = [r.req_s for r in _rounds(runs, tool, ours, complete)]
        thr_b = [r.req_s for r in _rounds(runs, tool, peer, complete)]
        eng_a = [r.engine_ttft_p90 for r in _rounds(runs, tool, ours, complete)]
        eng_b = [r.engine_ttft_p90 for r in _rounds(runs, tool, peer, complete)]
        report.ratios.append(XRatio(
            tool=tool, p50=latency_ratio(a, b, 50), p90=latency_ratio(a, b, 90), req_s=scalar_ratio(thr_b, thr_a),
            engine_ttft_p90=scalar_ratio(eng_b, eng_a),
        ))  # fmt: skip
    for contender in (ours, peer):
        g = [r.ttfts() for r in _rounds(runs, "guidellm", contender, complete)]
        f = [r.ttfts() for r in _rounds(runs, "flotilla-bench", contender, complete)]
        report.tool_vs_tool[contender] = (latency_ratio(g, f, 50), latency_ratio(g, f, 90))
    first, second = report.ratios
    report.agree_p50 = overlap(first.p50, second.p50)
    report.agree_p90 = overlap(first.p90, second.p90)
    report.agree_req_s = overlap(first.req_s, second.req_s)
    report.agree_engine = overlap(first.engine_ttft_p90, second.engine_ttft_p90)
    return report


def _ms(e: Estimate) -> str:
    if math.isnan(e.value):
        return "–"
    return f"{e.value * 1000:.1f} [{e.low * 1000:.1f}, {e.high * 1000:.1f}]"


def _x(e: Estimate) -> str:
    if math.isnan(e.value):
        return "–"
    return f"{e.value:.2f}× [{e.low:.2f}, {e.high:.2f}]"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _f(v: float, fmt: str) -> str:
    return "–" if math.isnan(v) else format(v, fmt)


def render(report: XReport, *, command: str, notes: Sequence[str]) -> str:
    lines = [
        "# Independent cross-check: flotilla bench vs guidellm",
        "",
        f"Command: `{command}`",
        "",
        *(f"> {n}" for n in notes),
        "",
        "TTFT is the median over rounds of each run's percentile with a 95 % two-level bootstrap interval "
        "(rounds, then requests), computed by bench/stats.py from each tool's own per-request TTFTs after a "
        "10 % warm-up (send order), failures as +∞. *tool's own p50 / p90* is what the tool itself reported "
        "(guidellm's summary; flotilla bench's RunSummary), median over rounds. Throughput: completed "
        "requests ÷ the run's span.",
        "",
        "| tool | contender | rounds | n | ok | TTFT p50 (ms) | TTFT p90 (ms) | tool's own p50 / p90 (ms) | "
        "throughput (req/s) | hit rate | engine TTFT p90 (sim ms) | engine prompt tokens / req | max send lag (ms) | "
        "load generator CPU (s) | router CPU (s) | router run-queue wait (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines.extend(
        f"| {c.tool} | `{c.contender}` | {c.rounds} | {c.n} | {c.ok}/{c.requests} | {_ms(c.p50)} | "
        f"{_ms(c.p90)} | {_f(c.reported_p50 * 1000, '.1f')} / {_f(c.reported_p90 * 1000, '.1f')} | "
        f"{_f(c.req_s.value, '.2f')} | {_f(c.hit_rate * 100, '.0f')}% | {_ms(c.engine_ttft_p90)} | "
        f"{_f(c.engine_prompt_tokens, '.0f')} | {_f(c.send_lag * 1000, '.1f')} | {_f(c.tool_cpu_s, '.1f')} | "
        f"{_f(c.router_cpu_s, '.1f')} | {_f(c.router_wait_s, '.1f')} |"
        for c in report.cells
    )
    lines += [
        "",
        f"`{report.ours}` ÷ `{report.peer}`, paired by round (TTFT: < 1 means Flotilla is faster; throughput: "
        "> 1 means Flotilla completed more):",
        "",
        "| tool | TTFT p50 ratio | TTFT p90 ratio | throughput ratio | engine-side TTFT p90 ratio |",
        "|---|---|---|---|---|",
        *(
            f"| {r.tool} | {_x(r.p50)} | {_x(r.p90)} | {_x(r.req_s)} | {_x(r.engine_ttft_p90)} |"
            for r in report.ratios
        ),
        "",
        "**Agreement** (the two tools' ratio intervals overlap): client TTFT p50 "
        f"**{_yes(report.agree_p50)}**, p90 **{_yes(report.agree_p90)}**; throughput **{_yes(report.agree_req_s)}**; "
        f"engine-side TTFT p90 **{_yes(report.agree_engine)}**.",
        "",
        "Tool against tool, same contender (guidellm ÷ flotilla bench, paired by round):",
        "",
        "| contender | TTFT p50 | TTFT p90 |",
        "|---|---|---|",
        *(f"| `{c}` | {_x(p50)} | {_x(p90)} |" for c, (p50, p90) in report.tool_vs_tool.items()),
        "",
    ]
    return "\n".join(lines)


def to_json(report: XReport, runs: Sequence[XRun], meta: dict[str, Any]) -> dict[str, Any]:
    """The committed results: the run's settings, every run (TTFTs in ms, 0.01 ms) and the derived figures."""

    def run_json(r: XRun) -> dict[str, Any]:
        data = asdict(r)
        data["ttft_ms"] = [None if v is None else round(v * 1000, 2) for v in r.ttft_samples]
        del data["ttft_samples"]
        return data

    return {**meta, "runs": [run_json(r) for r in runs], "report": asdict(report)}


def runs_from_json(data: dict[str, Any]) -> list[XRun]:
    """The runs of :func:`to_json`'s output (NaN was stored as null)."""
    floats = {f.name for f in fields(XRun) if f.type in ("float", float)}
    out = []
    for item in data["runs"]:
        item = {k: (math.nan if v is None and k in floats else v) for k, v in item.items()}
        item["ttft_samples"] = [None if v is None else v / 1000 for v in item.pop("ttft_ms")]
        out.append(XRun(**item))
    return out
