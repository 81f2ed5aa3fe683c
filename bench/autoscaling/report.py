"""The autoscaling report: calibration, one table per trace, the goal check, plots; pure functions of a result.

Every number is a mean over seeds with a 95 % Student-t interval (few seeds: the interval is wide on purpose).
The goal check is generated, never hand-edited: it states whether each Flotilla policy reached GPU-hours
≤ 1.10× the oracle at ≥ 99 % SLO attainment and beat the HPA-like baseline on both, and by how much if not.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from bench.autoscaling.spec import AutoscaleResult, RunRecord
from bench.autoscaling.traces import TRACES, scaled
from bench.report import num, table

#: two-sided 95 % Student-t quantiles by degrees of freedom (1–10); larger df use the normal 1.96
_T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23}
GOAL_GPU = 1.10
GOAL_SLO = 0.99
OURS = ("kpa", "kpa-arrivals", "kpa-headroom", "apa")
NAMES = {"kpa": "Flotilla KPA", "kpa-arrivals": "Flotilla KPA (arrivals)",
         "kpa-headroom": "Flotilla KPA (arrivals, 20 % headroom)", "apa": "Flotilla APA",
         "hpa": "HPA-like", "reactive": "reactive bound", "fixed": "fixed (peak)",
         "oracle": "oracle (replayed)"}  # fmt: skip


def interval(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the 95 % t-interval); half-width NaN for fewer than two finite values."""
    data = [v for v in values if math.isfinite(v)]
    if not data:
        return math.nan, math.nan
    mean = statistics.fmean(data)
    if len(data) < 2:
        return mean, math.nan
    t = _T95.get(len(data) - 1, 1.96)
    return mean, t * statistics.stdev(data) / math.sqrt(len(data))


def fmt_interval(values: Sequence[float], fmt: str = "{:.2f}", percent: bool = False) -> str:
    mean, half = interval(values)
    if math.isnan(mean):
        return "–"
    scale = 100.0 if percent else 1.0
    unit = " %" if percent else ""
    text = fmt.format(mean * scale)
    return text + unit if math.isnan(half) else f"{text} ± {fmt.format(half * scale)}{unit}"


def _runs(result: AutoscaleResult, trace: str | None, contender: str) -> list[RunRecord]:
    return [r for r in result.runs if (trace is None or r.trace == trace) and r.contender == contender]


def _contenders(result: AutoscaleResult) -> list[str]:
    seen = {r.contender for r in result.runs}
    return list(dict.fromkeys(c for c in (*NAMES, *sorted(seen)) if c in seen))


def trace_section(result: AutoscaleResult, trace: str, plots: Sequence[str]) -> list[str]:
    t = scaled(TRACES[trace](), result.config.get("trace_factor", 1.0))
    runs = [r for r in result.runs if r.trace == trace]
    seeds = sorted({r.seed for r in runs})
    out = [f"### Trace `{trace}`", "", f"{t.description}; seeds {', '.join(map(str, seeds))}.", ""]
    wall = result.config.get("clock", "wall") == "wall"
    header = ["contender", "GPU-hours ÷ oracle", "SLO attainment (minutes)", "TTFT p90 (s)", "step → ready (s)",
              "scale changes", "reversals", "failed"] + (["engine lag mean / max (s)"] if wall else [])  # fmt: skip
    rows = []
    for c in _contenders(result):
        rs = _runs(result, trace, c)
        if not rs:
            continue
        steps = [s for r in rs for s in r.step_to_ready]
        rows.append([
            NAMES.get(c, c), fmt_interval([r.gpu_vs_oracle for r in rs]),
            fmt_interval([r.attainment for r in rs], "{:.0f}", percent=True),
            fmt_interval([r.ttft_p90 for r in rs], "{:.1f}"),
            fmt_interval(steps, "{:.0f}") if steps else "–",
            num(statistics.fmean(r.scale_changes for r in rs), "{:.1f}"),
            num(statistics.fmean(r.reversals for r in rs), "{:.1f}"),
            str(sum(r.failed for r in rs)),
        ] + ([f"{num(statistics.fmean(r.lag_mean for r in rs), '{:.2f}')} / "
              f"{num(max(r.lag_max for r in rs), '{:.1f}')}"] if wall else []))  # fmt: skip
    out += table(header, rows)
    oracle_h = statistics.fmean(r.oracle_gpu_seconds for r in runs) / 3600 if runs else math.nan
    out += ["", f"Oracle: {num(oracle_h, '{:.3f}')} GPU-hours per run (simulated)."]
    out += [""] + [f"![{trace}]({p})" for p in plots] + [""]
    return out


def goal_check(result: AutoscaleResult) -> list[str]:
    lines = []
    hpa = _runs(result, None, "hpa")
    hpa_gpu, _ = interval([r.gpu_vs_oracle for r in hpa])
    hpa_slo, _ = interval([r.attainment for r in hpa])
    for c in OURS:
        rs = _runs(result, None, c)
        if not rs:
            continue
        gpu, _ = interval([r.gpu_vs_oracle for r in rs])
        slo, _ = interval([r.attainment for r in rs])
        verdicts = [
            f"GPU-hours {gpu:.2f}× the oracle "
            + ("(goal ≤ 1.10×: met)" if gpu <= GOAL_GPU else f"(goal ≤ 1.10×: missed by {gpu - GOAL_GPU:.2f}×)"),
            f"SLO attainment {slo:.1%} "
            + ("(goal ≥ 99 %: met)" if slo >= GOAL_SLO else f"(goal ≥ 99 %: missed by {(GOAL_SLO - slo) * 100:.1f} points)"),
        ]  # fmt: skip
        if hpa:
            verdicts.append(
                f"vs HPA-like {hpa_gpu:.2f}× / {hpa_slo:.1%}: "
                + ("cheaper" if gpu < hpa_gpu else "not cheaper")
                + " and "
                + (
                    "more within SLO"
                    if slo > hpa_slo
                    else "not more within SLO"
                    if slo < hpa_slo
                    else "level on SLO"
                )
            )
        lines.append(f"- **{NAMES[c]}** over all traces and seeds: " + "; ".join(verdicts) + ".")
    return lines + reactive_bound(result)


def reactive_bound(result: AutoscaleResult) -> list[str]:
    """Per trace, the reactive bound's SLO attainment: below the goal, no reactive policy can meet it there."""
    lines = []
    for trace in dict.fromkeys(r.trace for r in result.runs):
        rs = _runs(result, trace, "reactive")
        if not rs:
            continue
        slo, _ = interval([r.attainment for r in rs])
        gpu, _ = interval([r.gpu_vs_oracle for r in rs])
        verdict = (
            f"below the goal by {(GOAL_SLO - slo) * 100:.1f} points: on this trace no policy that reacts to the "
            "load it sees, without holding spare engines, can reach 99 %"
            if slo < GOAL_SLO
            else "the goal is reachable by reacting alone"
        )
        lines.append(
            f"- **Reactive bound** on `{trace}`: {slo:.1%} of minutes at {gpu:.2f}× the oracle — {verdict}."
        )
    return lines


def render(result: AutoscaleResult, plots: dict[str, list[str]], *, heading: str = "##") -> str:
    cfg = result.config
    cal = result.calibration
    out = [
        f"{heading} flotilla bench — {result.suite} suite",
        "",
        f"Command: `{result.command}`",
        "",
        (
            f"Clock: **virtual** — engine_sim's scheduler and latency model (preset `{cfg['preset']}` with "
            f"{cfg['engine']}) in a discrete-event simulation with a model of the gateway and the local scaler's loop "
            "(`bench/autoscaling/virtual.py`); deterministic per seed, no wall clock, so no engine lag. "
            if cfg.get("clock", "wall") == "virtual"
            else f"Clock: **wall** — engines: `flotilla sim` preset `{cfg['preset']}` with {cfg['engine']}, started and "
            f"stopped by the local scaler (`flotilla up --autoscale`'s), time scale {cfg['time_scale']:g}. "
        )
        + f"Cold start {cfg['startup_delay']:g} s, at most {cfg['max_engines']} "
        f"engines, at least {cfg['min_engines']}. Requests: {cfg['prompt_tokens']}-token prompts, "
        f"{cfg['output_tokens']} output tokens, Poisson arrivals following each trace. All times are simulated "
        f"seconds. SLO: TTFT p90 ≤ {cfg['slo_ttft']:g} s in "
        "each trace minute; TTFT includes the time the gateway held the request while no "
        "engine served. GPU-hours charge every engine from its start (cold start included) to its stop.",
        "",
        f"**Calibration** (one engine, constant Poisson load, first 30 s discarded): capacity at the SLO "
        f"**{cal.cap:.3f} req/s** per engine ("
        + (
            "highest rate at which ≤ 0.5 % of minutes miss the SLO, interpolated"
            if cal.criterion == "minutes"
            else "highest rate with TTFT p99 ≤ the SLO, interpolated"
        )
        + "); per-pod targets "
        f"by Little's law at that rate: concurrency {cal.concurrency:.2f} (KPA/APA on gateway demand), running "
        f"{cal.running:.2f} (HPA-like on `vllm:num_requests_running`).",
        "",
    ]
    if cal.points:
        misses = cal.minute_misses or [math.nan] * len(cal.points)
        out += table(["rate (req/s)", "TTFT p90 (s)", "TTFT p99 (s)", "mean e2e (s)", "minutes missing the SLO"],
                     [[f"{p[0]:g}", num(p[1], "{:.2f}"), num(p[2], "{:.2f}"), num(p[3], "{:.2f}"),
                       "–" if math.isnan(m) else f"{m:.1%}"]
                      for p, m in zip(cal.points, misses, strict=True)])  # fmt: skip
        out.append("")
    out += [f"> note: {n}" for n in result.notes] + ([""] if result.notes else [])
    for trace in dict.fromkeys(r.trace for r in result.runs):
        out += trace_section(result, trace, plots.get(trace, []))
    out += ["### Goal check (generated)", ""]
    out += goal_check(result) or ["No Flotilla policy ran."]
    out.append("")
    return "\n".join(out)
