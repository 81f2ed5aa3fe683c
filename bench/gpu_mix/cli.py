"""``flotilla bench --suite optimizer [--quick]``: run, then write optimizer.json and report.md."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import click

from bench.gpu_mix.report import from_json, render, to_json
from bench.gpu_mix.runner import GPUS, MIX_SUITES, run_mix_suite

RESULTS = "optimizer.json"


def run(
    suite_name: str,
    *,
    quick: bool,
    out: Path,
    seed: int,
    rerender: bool,
    command: str,
    gpus: set[str] | None = None,
) -> None:
    if rerender:
        try:
            result = from_json((out / RESULTS).read_bytes())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise click.ClickException(f"cannot read optimizer results from {out}: {exc}") from exc
    else:
        suite = MIX_SUITES["optimizer-quick" if quick else suite_name]()
        if seed:
            suite = dataclasses.replace(suite, seeds=tuple(range(seed, seed + len(suite.seeds))))
        if gpus is not None:
            if unknown := gpus - set(GPUS):
                raise click.UsageError(
                    f"unknown GPU type(s): {', '.join(sorted(unknown))}; known: {', '.join(GPUS)}"
                )
            suite = dataclasses.replace(suite, gpus=tuple(g for g in GPUS if g in gpus))
        result = asyncio.run(run_mix_suite(suite, out, command, lambda line: click.echo(line, err=True)))
        out.mkdir(parents=True, exist_ok=True)
        (out / RESULTS).write_bytes(to_json(result))
    (out / "report.md").write_text(render(result))
    click.echo(f"report: {out / 'report.md'}")
