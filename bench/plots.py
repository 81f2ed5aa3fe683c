"""PNG plots of a suite result (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.overhead import OverheadRow
from bench.results import RunSummary
from bench.runner import SuiteResult, WorkloadInfo


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _clean(values: Sequence[float]) -> list[float]:
    return [0.0 if math.isnan(v) else v for v in values]


def workload_plot(info: WorkloadInfo, runs: Sequence[RunSummary], path: Path) -> None:
    """TTFT p50/p90 and hit rate (with the oracle's as a line) per contender, side by side."""
    plt = _pyplot()
    ran = [r for r in runs if not r.skipped]
    names = [r.contender for r in ran]
    x = list(range(len(ran)))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(7.0, 0.55 * len(ran) + 2), 8.0), sharex=True)
    width = 0.4
    ax1.bar([i - width / 2 for i in x], _clean([r.ttft_p50 for r in ran]), width, label="p50")
    ax1.bar([i + width / 2 for i in x], _clean([r.ttft_p90 for r in ran]), width, label="p90")
    ax1.set_ylabel("TTFT (s, log scale)")
    ax1.set_yscale("log")
    ax1.set_title(f"{info.name}: time to first token")
    ax1.legend()
    ax2.bar(x, _clean([r.hit_rate for r in ran]), color="tab:green")
    if not math.isnan(info.oracle_hit_rate):
        ax2.axhline(info.oracle_hit_rate, color="black", linestyle="--", label="infinite-cache oracle")
        ax2.legend()
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("token hit rate (engines' counters)")
    ax2.set_title(f"{info.name}: prefix-cache hit rate")
    ax2.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def overhead_plot(rows: Sequence[OverheadRow], path: Path) -> None:
    plt = _pyplot()
    ran = [r for r in rows if not r.skipped]
    names = [r.contender for r in ran]
    x = list(range(len(ran)))
    fig, axes = plt.subplots(1, 3, figsize=(max(10.0, 1.5 * len(ran) + 2), 4.5))
    panels = [
        ("e2e p50 (ms), sequential", [r.latency_p50 * 1000 for r in ran]),
        ("requests/s (closed loop)", [r.req_s for r in ran]),
        ("streamed chunks/s", [r.chunks_s for r in ran]),
    ]
    for ax, (title, values) in zip(axes, panels, strict=True):
        ax.bar(x, _clean(values))
        ax.set_title(title)
        ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    fig.suptitle("gateway overhead, zero-latency engines")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def median_seed_runs(runs: Sequence[RunSummary]) -> list[RunSummary]:
    """One run per contender: its seed with the median TTFT p90 (the report's tables hold every seed)."""
    by: dict[str, list[RunSummary]] = {}
    for r in runs:
        by.setdefault(r.contender, []).append(r)
    out = []
    for group in by.values():
        ran = sorted((r for r in group if not r.skipped), key=lambda r: r.ttft_p90)
        out.append(ran[(len(ran) - 1) // 2] if ran else group[0])
    return out


def render_plots(result: SuiteResult, directory: Path, *, prefix: str = "") -> dict[str, list[str]]:
    """Write every plot into ``directory``; returns {section: [file names]}."""
    directory.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[str]] = {}
    for info in result.workloads:
        runs = [r for r in result.runs if r.workload == info.name]
        if not any(not r.skipped for r in runs):
            continue
        name = f"{prefix}{info.name}.png"
        workload_plot(info, median_seed_runs(runs), directory / name)
        out[info.name] = [name]
    if any(not r.skipped for r in result.overhead):
        name = f"{prefix}overhead.png"
        overhead_plot(result.overhead, directory / name)
        out["overhead"] = [name]
    return out
