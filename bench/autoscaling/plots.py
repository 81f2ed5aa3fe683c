"""The replicas-and-load plot of each trace: every contender's ready engines over time against the load.

One panel per seed would crowd the report; the first seed's run of each contender is drawn (the tables hold
every seed). The load is drawn in engines' worth (rate ÷ capacity), on the same axis as replicas, with the oracle's
schedule (engines running, cold starts included) dashed, so every contender's gap to it can be read directly.
"""

from __future__ import annotations

from pathlib import Path

from bench.autoscaling import oracle
from bench.autoscaling.spec import AutoscaleResult
from bench.autoscaling.traces import TRACES, scaled
from bench.plots import _pyplot

STYLE = {
    "kpa": "tab:blue",
    "kpa-arrivals": "tab:purple",
    "kpa-headroom": "tab:pink",
    "apa": "tab:green",
    "hpa": "tab:red",
    "reactive": "tab:brown",
    "fixed": "tab:gray",
    "oracle": "black",
}


def trace_plot(result: AutoscaleResult, trace: str, path: Path) -> None:
    plt = _pyplot()
    t = scaled(TRACES[trace](), result.config.get("trace_factor", 1.0))
    runs = [r for r in result.runs if r.trace == trace]
    seed = min(r.seed for r in runs)
    fig, ax = plt.subplots(figsize=(9.0, 4.5))
    xs = list(range(int(t.duration) + 1))
    ax.fill_between(xs, [t.level(x) for x in xs], color="tab:orange", alpha=0.25, step="post",
                    label="load (engines' worth)")  # fmt: skip
    plan = oracle.schedule(t, result.calibration.cap, result.config["startup_delay"],
                           min_replicas=result.config["min_engines"])  # fmt: skip
    ax.step(xs, [plan.alive(x) for x in xs], where="post", color="black", linestyle="--", linewidth=0.9,
            label="oracle plan (engines running)")  # fmt: skip
    for r in runs:
        if r.seed != seed or not r.timeline:
            continue
        times = [row[0] for row in r.timeline]
        ready = [row[2] for row in r.timeline]
        ax.step(times, ready, where="post", color=STYLE.get(r.contender), linewidth=1.6 if r.contender.startswith(("kpa", "apa")) else 1.0,
                label=f"{r.contender} ready engines")  # fmt: skip
    ax.set_xlabel("trace time (simulated s)")
    ax.set_ylabel("engines")
    ax.set_title(f"{trace}: ready engines vs load (seed {seed})")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_plots(
    result: AutoscaleResult, directory: Path, *, prefix: str = "autoscaling-"
) -> dict[str, list[str]]:
    directory.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[str]] = {}
    for trace in dict.fromkeys(r.trace for r in result.runs):
        name = f"{prefix}{trace}.png"
        trace_plot(result, trace, directory / name)
        out[trace] = [name]
    return out
