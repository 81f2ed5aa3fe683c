"""``flotilla profile`` and ``flotilla optimize``: the GPU optimizer from the command line (docs/optimizer.md).

``profile`` measures one GPU type — a live engine (``--url``: vLLM or engine_sim) or a simulated GPU
(``--preset``: engine_sim's scheduler in pure simulated time) — and writes a profile file. ``optimize`` reads
profiles, a workload and prices and prints the cheapest mix. Every bad input ends in one line on stderr.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from flotilla.sizes import DEFAULT_INPUT_BOUNDS, DEFAULT_OUTPUT_BOUNDS

if TYPE_CHECKING:
    from optimizer import Slo


def _bounds(value: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated token counts, got {value!r}", param_hint=what
        ) from None


def _slos(values: tuple[str, ...]) -> list[Slo]:
    from optimizer import InputError, Slo

    out = []
    for v in values:
        try:
            slo = Slo.parse(v)
        except InputError as exc:
            raise click.BadParameter(str(exc), param_hint="--slo") from None
        if slo.ttft is None or slo.tpot is None:
            raise click.BadParameter(
                f"{v!r}: profiling needs both ttft and tpot (a TPOT-only SLO has no capacity limit: the queue "
                "grows while each request's TPOT stays fine)",
                param_hint="--slo",
            )
        out.append(slo)
    return out


@click.command("profile")
@click.option("--url", default=None, help="A live engine's base URL (vLLM or engine_sim).")
@click.option("--preset", default=None, help="A simulated GPU: an engine_sim preset, e.g. l4-llama3-8b.")
@click.option("--gpu", default=None, help="GPU type name for the profile (default: from --preset).")
@click.option("--model", default=None, help="Model name to request (--url; default: the engine's first).")
@click.option("--slo", "slo_texts", multiple=True, required=True,
              help="SLO to profile, e.g. ttft=2,tpot=0.04 (seconds; repeatable).")  # fmt: skip
@click.option("--input-bounds", default=",".join(map(str, DEFAULT_INPUT_BOUNDS)), show_default=True,
              help="Prompt-token bucket upper bounds.")  # fmt: skip
@click.option("--output-bounds", default=",".join(map(str, DEFAULT_OUTPUT_BOUNDS)), show_default=True,
              help="Output-token bucket upper bounds.")  # fmt: skip
@click.option("--min-requests", default=60, show_default=True, type=click.IntRange(10))
@click.option("--max-requests", default=2000, show_default=True, type=click.IntRange(10))
@click.option("--min-seconds", default=30.0, show_default=True, type=click.FloatRange(1),
              help="Each probe offers at least this many (simulated) seconds of load.")  # fmt: skip
@click.option("--max-rate", default=200.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Search rates up to this (req/s per engine); a profile entry equal to it means 'at least'.")  # fmt: skip
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Profile file to write (default: profile-<gpu>.json).")  # fmt: skip
@click.option("--quiet", is_flag=True, help="No per-probe progress on stderr.")
def profile(
    url: str | None, preset: str | None, gpu: str | None, model: str | None, slo_texts: tuple[str, ...],
    input_bounds: str, output_bounds: str, min_requests: int, max_requests: int, min_seconds: float,
    max_rate: float, seed: int,
    out: Path | None, quiet: bool,
) -> None:  # fmt: skip
    """Measure the highest request rate one engine sustains within each SLO, per request-size bucket."""
    from optimizer import Grid, InputError, LoadProbe, profile_gpu, validated

    if (url is None) == (preset is None):
        raise click.UsageError("give exactly one of --url (a live engine) and --preset (a simulated GPU)")
    slos = _slos(slo_texts)
    try:
        grid = validated(
            Grid,
            {"input_bounds": _bounds(input_bounds, "--input-bounds"),
             "output_bounds": _bounds(output_bounds, "--output-bounds")},
            "bucket bounds",
        )  # fmt: skip
    except InputError as exc:
        raise click.UsageError(str(exc)) from None
    probe: LoadProbe
    if preset is not None:
        from engine_sim import GPU_PRESETS, PRESETS
        from flotilla.cli.gpu_probe import simulated_probe

        if preset not in PRESETS:
            raise click.BadParameter(f"unknown preset {preset!r}; choose from {', '.join(sorted(PRESETS))}",
                                     param_hint="--preset")  # fmt: skip
        gpu = gpu or (GPU_PRESETS[preset].gpu.name if preset in GPU_PRESETS else preset)
        probe = simulated_probe(preset, slos, seed=seed)
        engine, model = f"engine_sim:{preset}", model or ""
    else:
        assert url is not None
        if gpu is None:
            raise click.UsageError("--url needs --gpu (the GPU type the engine runs on)")
        from optimizer import http_probe

        model = model or asyncio.run(_first_model(url))
        probe, engine = http_probe(url, model, seed=seed), url

    def show(prompt: int, output: int, slo: Slo, rate: float, share: float) -> None:
        if not quiet:
            click.echo(f"{gpu} in≤{prompt} out≤{output} {slo.label()}: {rate:.3g} req/s → {share:.1%}",
                       err=True)  # fmt: skip

    result = asyncio.run(
        profile_gpu(probe, grid, slos, gpu=gpu, engine=engine, model=model, min_requests=min_requests,
                    max_requests=max_requests, min_seconds=min_seconds, ceiling=max_rate, report=show)
    )  # fmt: skip
    path = out or Path(f"profile-{gpu}.json")
    path.write_text(result.model_dump_json(indent=2) + "\n")
    click.echo(f"profile: {path}")


async def _first_model(url: str) -> str:
    import httpx

    try:
        async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
            response = await client.get(url.rstrip("/") + "/v1/models")
            response.raise_for_status()
            return str(response.json()["data"][0]["id"])
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
        raise click.ClickException(f"cannot list the models of {url}: {exc}") from None


def _profile_files(values: tuple[Path, ...]) -> list[Path]:
    files: list[Path] = []
    for v in values:
        files.extend(sorted(v.glob("*.json")) if v.is_dir() else [v])
    if not files:
        raise click.UsageError("--profiles found no profile files")
    return files


@click.command("optimize")
@click.option("--profiles", "profile_paths", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Profile files (or directories of them), one per GPU type; repeatable.")  # fmt: skip
@click.option("--workload", "workload_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Workload JSON: input_bounds, output_bounds, rate[input][output] in req/s.")  # fmt: skip
@click.option("--workload-from", "gateways", multiple=True,
              help="Instead of --workload: gateway base URL(s) whose request-size counter to observe.")  # fmt: skip
@click.option("--model", default=None, help="With --workload-from: the model whose requests to count.")
@click.option("--window", default=60.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="With --workload-from: seconds between the two scrapes.")  # fmt: skip
@click.option(
    "--slo", "slo_text", default=None, help="Which profiled SLO to plan for (default: the only one)."
)
@click.option("--prices", "prices_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help='JSON {"per_hour": {"gpu": dollars per hour}}, over the default on-demand list.')  # fmt: skip
@click.option("--slice-factor", default=8, show_default=True, type=click.IntRange(1, 64),
              help="Slices per bucket (a bucket can be split across types in steps of 1/slice-factor).")  # fmt: skip
@click.option("--headroom", default=1.0, show_default=True, type=click.FloatRange(0, 1, min_open=True),
              help="Plan each GPU to at most this load (1 = the profiled capacity).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def optimize(
    profile_paths: tuple[Path, ...], workload_path: Path | None, gateways: tuple[str, ...], model: str | None,
    window: float, slo_text: str | None, prices_path: Path | None, slice_factor: int, headroom: float,
    as_json: bool,
) -> None:  # fmt: skip
    """The cheapest count of each GPU type that serves the workload within the SLO (Mélange's ILP)."""
    from optimizer import (
        DEFAULT_PRICES,
        OptimizerError,
        Prices,
        Profile,
        Slo,
        Workload,
        load_json,
        observe,
        plan_to_dict,
        render,
        solve,
    )

    if (workload_path is None) == (not gateways):
        raise click.UsageError("give exactly one of --workload (a file) and --workload-from (gateway URLs)")
    if gateways and not model:
        raise click.UsageError("--workload-from needs --model")
    try:
        profiles = [load_json(Profile, p, "profile") for p in _profile_files(profile_paths)]
        if workload_path is not None:
            workload = load_json(Workload, workload_path, "workload")
        else:
            assert model is not None
            workload = asyncio.run(observe(gateways, model, window, profiles[0]))
        prices = dict(DEFAULT_PRICES)
        if prices_path is not None:
            prices.update(load_json(Prices, prices_path, "price list").per_hour)
        slo = Slo.parse(slo_text) if slo_text else None
        plan = solve(profiles, workload, prices, slo, slice_factor=slice_factor, headroom=headroom)
    except OptimizerError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(plan_to_dict(plan), indent=2) if as_json else render(plan))
