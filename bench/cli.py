"""``flotilla bench``: run a suite, write report.md + results.json + PNG plots into ``--out``."""

from __future__ import annotations

import asyncio
import dataclasses
import shlex
import sys
from pathlib import Path

import click

from bench.autoscaling.suite import AUTOSCALE_SUITES
from bench.gpu_mix.runner import MIX_SUITES
from bench.procs import BenchError
from bench.progress import Progress
from bench.report import render
from bench.runner import SuiteResult, count_steps, run_suite
from bench.store import load, to_json
from bench.suites import SUITES, Suite
from bench.workloads import GENERATORS


def _csv(value: str | None) -> set[str] | None:
    return {v.strip() for v in value.split(",") if v.strip()} if value else None


def configure(
    suite: Suite, *, engines: int | None, preset: str | None, time_scale: float | None, rate_scale: float
) -> Suite:
    fleet = suite.fleet
    if engines is not None:
        fleet = dataclasses.replace(fleet, engines=engines)
    if preset is not None:
        fleet = dataclasses.replace(fleet, preset=preset)
    if time_scale is not None:
        fleet = dataclasses.replace(fleet, time_scale=time_scale)
    runs = tuple(dataclasses.replace(r, rate=r.rate * rate_scale) for r in suite.runs)
    return dataclasses.replace(suite, fleet=fleet, runs=runs)


@click.command("bench")
@click.option(
    "--quick", is_flag=True, help="The quick suite (under a minute): one small workload, few contenders."
)
@click.option(
    "--suite",
    "suite_name",
    type=click.Choice(
        sorted(
            [
                *SUITES,
                "reliability",
                "health-under-load",
                "overhead",
                "crosscheck",
                "routing-bound",
                *AUTOSCALE_SUITES,
                *MIX_SUITES,
            ]
        )
    ),
    default="standard",
    show_default=True,
    help="reliability: faults under load (bench/reliability); autoscaling: autoscalers vs HPA-like, fixed and "
    "oracle (bench/autoscaling); health-under-load: /health latency and memory under 50 concurrent 1 MB prompts "
    "(bench/health_load.py); overhead: gateway overhead next to the peer routers on a stub engine "
    "(bench/gateway_overhead.py); optimizer: the GPU mix (Mélange) vs the best single GPU type on simulated GPUs "
    "(bench/gpu_mix); crosscheck: gsp measured by flotilla bench and by guidellm against Flotilla and the best peer "
    "(bench/crosscheck.py); routing-bound: the standard workloads routed in virtual time, against a clairvoyant "
    "router and a lower bound (bench/routing_bound.py); with --quick, their short versions.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bench-results"),
    show_default=True,
    help="Output directory for report.md, results.json and plots.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of workloads, arrivals and engines."
)
@click.option(
    "--engines", type=click.IntRange(1, 64), default=None, help="Override the suite's engine count."
)
@click.option("--preset", default=None, help="Override the engines' latency preset (e.g. h100-llama3-8b).")
@click.option(
    "--time-scale",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Simulated-time scale passed to the engines (see `flotilla sim --help`).",
)
@click.option(
    "--rate-scale",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Multiply every workload's request rate.",
)
@click.option(
    "--workloads",
    default=None,
    help=f"Comma list to run, of: {', '.join(GENERATORS)} (--suite autoscaling: of its traces).",
)
@click.option(
    "--contenders",
    default=None,
    help="Comma list to keep, e.g. direct,flotilla:default,sglang:cache_aware (--suite optimizer: GPU types).",
)
@click.option(
    "--overhead/--no-overhead", default=True, show_default=True, help="Run the gateway-overhead mode."
)
@click.option(
    "--pin/--no-pin", default=True, show_default=True, help="Pin each router to one CPU in the overhead mode."
)
@click.option(
    "--rerender", is_flag=True, help="Run nothing: re-render report.md and plots from --out's results.json."
)
@click.option(
    "--lora",
    is_flag=True,
    help="Run the LoRA placement comparison instead (flotilla, one-replica, everywhere, random).",
)
@click.option(
    "--seeds",
    type=click.IntRange(1, 20),
    default=None,
    help="How many trace seeds (routing suites: the suite's first N, default all; --lora: from --seed on, default 3).",
)
@click.option("--requests", type=click.IntRange(10), default=None, help="--lora: requests per seed.")
@click.option(
    "--router-nice",
    type=click.IntRange(-20, 19),
    default=None,
    help="--suite crosscheck: run every router at this nice value (below 0 needs root), to test whether a "
    "router's client-side TTFT is its wait for a CPU.",
)
@click.option(
    "--clock",
    type=click.Choice(["virtual", "wall"]),
    default="virtual",
    show_default=True,
    help="--suite autoscaling: virtual = a deterministic simulation in simulated time (the reported tables); "
    "wall = the gateway, local scaler and served engines, time-scaled (the integration check).",
)
def bench(
    quick: bool, suite_name: str, out: Path, seed: int, engines: int | None, preset: str | None,
    time_scale: float | None, rate_scale: float, workloads: str | None, contenders: str | None,
    overhead: bool, pin: bool, rerender: bool, lora: bool, seeds: int | None, requests: int | None, clock: str,
    router_nice: int | None,
) -> None:  # fmt: skip
    """Benchmark Flotilla's routing strategies against direct access and peer routers on simulated engines."""
    if lora:
        _lora(out, seed, seeds or 3, requests, engines, preset, time_scale, rate_scale, _csv(contenders))
        return
    if suite_name in AUTOSCALE_SUITES:
        from bench.autoscaling.cli import run as run_autoscaling

        command = "flotilla bench " + shlex.join(sys.argv[2:]) if len(sys.argv) > 1 else "flotilla bench"
        suite_seeds = (seed,) if seed != 0 else None  # 0 = the suite's own seeds
        run_autoscaling(suite_name, quick=quick, out=out, time_scale=time_scale, contenders=_csv(contenders),
                        traces=_csv(workloads), seeds=suite_seeds, rerender=rerender, command=command.strip(),
                        clock=clock)  # fmt: skip
        return
    if suite_name in MIX_SUITES:
        from bench.gpu_mix.cli import run as run_gpu_mix

        command = "flotilla bench " + shlex.join(sys.argv[2:]) if len(sys.argv) > 1 else "flotilla bench"
        run_gpu_mix(suite_name, quick=quick, out=out, seed=seed, rerender=rerender, command=command.strip(),
                    gpus=_csv(contenders))  # fmt: skip
        return
    if suite_name == "crosscheck":
        from bench.crosscheck import cli_run

        command = "flotilla bench " + shlex.join(sys.argv[2:]) if len(sys.argv) > 1 else "flotilla bench"
        cli_run(quick=quick, out=out, seed=seed, seeds=seeds, contenders=_csv(contenders), rerender=rerender,
                command=command.strip(), router_nice=router_nice)  # fmt: skip
        return
    if suite_name == "routing-bound":
        from bench.routing_bound import cli_run as run_bound

        click.echo(
            f"report: {run_bound(quick=quick, out=out, seed=seed, seeds=seeds, workloads=_csv(workloads))}"
        )
        return
    if suite_name == "health-under-load":
        from bench import health_load

        command = "flotilla bench " + shlex.join(sys.argv[2:]) if len(sys.argv) > 1 else "flotilla bench"
        click.echo(f"report: {health_load.suite(quick, out, command)}")
        return
    if suite_name == "overhead":
        from bench import gateway_overhead

        command = "flotilla bench " + shlex.join(sys.argv[2:]) if len(sys.argv) > 1 else "flotilla bench"
        click.echo(f"report: {gateway_overhead.suite(quick, out, command)}")
        return
    if suite_name == "reliability":
        if workloads or contenders:
            raise click.UsageError("--workloads and --contenders do not apply to the reliability suite")
        run_reliability_suite(quick, out, seed, engines, preset, time_scale, rate_scale, rerender)
        return
    if rerender:
        try:
            write_report(load(out / "results.json"), out)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        return
    suite = SUITES["quick" if quick else suite_name](seed)
    wanted = _csv(workloads)
    if wanted is not None and (unknown := wanted - set(GENERATORS)):
        raise click.UsageError(f"unknown workload(s): {', '.join(sorted(unknown))}")
    if seeds is not None:
        first = suite.seeds[0]
        suite = dataclasses.replace(suite, seeds=tuple(range(first, first + seeds)))
    suite = configure(suite, engines=engines, preset=preset, time_scale=time_scale, rate_scale=rate_scale)
    suite = suite.with_filters(workloads=wanted, contenders=_csv(contenders), overhead=overhead)
    if count_steps(suite) == 0:
        raise click.UsageError("nothing to run: the filters left no workload or contender")
    command = "flotilla bench " + shlex.join(sys.argv[2:]) if len(sys.argv) > 1 else "flotilla bench"
    progress = Progress(count_steps(suite))
    try:
        result = asyncio.run(run_suite(suite, command=command.strip(), progress=progress, pin=pin))
    except BenchError as exc:
        raise click.ClickException(str(exc)) from exc
    except ValueError as exc:
        raise click.ClickException(f"bad configuration: {exc}") from exc
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_bytes(to_json(result))
    write_report(result, out)


def _lora(
    out: Path, seed: int, seeds: int, requests: int | None, engines: int | None, preset: str | None,
    time_scale: float | None, rate_scale: float, contenders: set[str] | None,
) -> None:  # fmt: skip
    from bench import lora_bench

    spec = lora_bench.LoraBenchSpec(seeds=tuple(range(seed, seed + seeds)))
    spec = dataclasses.replace(
        spec,
        requests=requests or spec.requests,
        engines=engines or spec.engines,
        preset=preset or spec.preset,
        time_scale=time_scale or spec.time_scale,
        rate=spec.rate * rate_scale,
    )
    names = [n for n in lora_bench.CONTENDERS if contenders is None or n in contenders]
    if "flotilla" not in names:
        raise click.UsageError("--lora compares against flotilla: keep it in --contenders")
    command = "flotilla bench " + shlex.join(sys.argv[2:])

    def show(row: lora_bench.LoraRow) -> None:
        click.echo(f"seed {row.seed} {row.contender}: TTFT p90 {row.ttft_p90 * 1000:.0f} ms, "
                   f"swaps/min {row.swaps_per_min:.0f}, goodput {row.goodput:.2f}/s, ok {row.ok}/{row.requests}",
                   err=True)  # fmt: skip

    try:
        rows = asyncio.run(lora_bench.run(spec, names, show))
    except BenchError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"report: {lora_bench.write(out, spec, rows, command)}")


def run_reliability_suite(
    quick: bool, out: Path, seed: int, engines: int | None, preset: str | None, time_scale: float | None,
    rate_scale: float, rerender: bool,
) -> None:  # fmt: skip
    """Faults under load; exits non-zero when an acceptance check fails (the report says which)."""
    from bench import reliability

    if rerender:
        try:
            result = reliability.from_json((out / "results.json").read_bytes())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise click.ClickException(f"cannot read reliability results from {out}: {exc}") from exc
    else:
        spec = (reliability.quick if quick else reliability.full)(seed)
        spec = dataclasses.replace(
            spec, engines=engines or spec.engines, preset=preset or spec.preset,
            time_scale=time_scale or spec.time_scale, rate=spec.rate * rate_scale,
        )  # fmt: skip
        progress = Progress(len(spec.phases))
        command = "flotilla bench " + shlex.join(sys.argv[2:]) if len(sys.argv) > 1 else "flotilla bench"
        try:
            result = asyncio.run(
                reliability.run_reliability(
                    spec, command=command.strip(), progress=progress, gateway_log=out / "gateway.log"
                )
            )
        except BenchError as exc:
            raise click.ClickException(str(exc)) from exc
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_bytes(reliability.to_json(result))
    (out / "report.md").write_text(reliability.render(result))
    click.echo(f"report: {out / 'report.md'}")
    if not result.passed:
        failed = "; ".join(f"{c.name} ({c.detail})" for c in result.checks if not c.passed)
        raise click.ClickException(f"reliability acceptance failed: {failed}")


def write_report(result: SuiteResult, out: Path) -> None:
    from bench.plots import render_plots  # matplotlib is imported only when there is something to plot

    plots = render_plots(result, out)
    (out / "report.md").write_text(render(result, plots, heading="#"))
    click.echo(f"report: {out / 'report.md'}")
