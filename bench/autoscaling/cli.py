"""``flotilla bench --suite autoscaling [--quick]``: run, then write autoscaling.json, report.md and plots."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import click

from bench.autoscaling.runner import count_steps, run_autoscale_suite
from bench.autoscaling.spec import CLOCKS, CONTENDERS, EXTRA_CONTENDERS
from bench.autoscaling.suite import AUTOSCALE_SUITES, load, to_json
from bench.autoscaling.traces import TRACES
from bench.procs import BenchError
from bench.progress import Progress

RESULTS = "autoscaling.json"


def run(
    suite_name: str, *, quick: bool, out: Path, time_scale: float | None, contenders: set[str] | None,
    traces: set[str] | None, seeds: tuple[int, ...] | None, rerender: bool, command: str, clock: str = "virtual",
) -> None:  # fmt: skip
    if rerender:
        try:
            write_report(load(out / RESULTS), out)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        return
    if clock not in CLOCKS:
        raise click.UsageError(f"unknown clock {clock!r}; choose from {', '.join(CLOCKS)}")
    suite = AUTOSCALE_SUITES["autoscaling-quick" if quick else suite_name](clock)
    if time_scale is not None:
        suite = dataclasses.replace(suite, time_scale=time_scale)
    if contenders is not None:
        known = (*CONTENDERS, *EXTRA_CONTENDERS)
        if unknown := contenders - set(known):
            raise click.UsageError(f"unknown autoscaling contender(s): {', '.join(sorted(unknown))}")
        suite = dataclasses.replace(suite, contenders=tuple(c for c in known if c in contenders))
    if traces is not None:
        if unknown := traces - set(TRACES):
            raise click.UsageError(
                f"unknown trace(s): {', '.join(sorted(unknown))}; known: {', '.join(TRACES)}"
            )
        suite = dataclasses.replace(suite, traces=tuple(t for t in suite.traces if t in traces))
    if seeds:
        suite = dataclasses.replace(suite, seeds=seeds)
    if not suite.contenders or not suite.traces:
        raise click.UsageError("nothing to run: the filters left no contender")
    progress = Progress(count_steps(suite))
    try:
        result = asyncio.run(run_autoscale_suite(suite, command=command, progress=progress))
    except (BenchError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULTS).write_bytes(to_json(result))
    write_report(result, out)


def write_report(result: object, out: Path) -> None:
    from bench.autoscaling.plots import render_plots
    from bench.autoscaling.report import render

    plots = render_plots(result, out)  # type: ignore[arg-type]
    (out / "report.md").write_text(render(result, plots, heading="#"))  # type: ignore[arg-type]
    click.echo(f"report: {out / 'report.md'}")
