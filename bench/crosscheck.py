"""``flotilla bench --suite crosscheck``: the standard suite's shared-prefix workload measured twice, by
``flotilla bench``'s own load generator and by guidellm (a load generator this project did not write), against
Flotilla and the best peer of the standard suite, on the same simulated fleet.

Why this workload: ``gsp`` is where the routing tables make their sharpest client-side claim (Flotilla behind
the swept ``sglang:cache_aware`` on TTFT p90) and the one shape guidellm can express exactly: N shared system
prompts (its ``prefix_buckets``), a synthetic question, a fixed ``ignore_eos`` output, Poisson arrivals.
Multi-turn sessions it sends as concurrent streams, not as the suite's closed loop with think time, so they
would not be the same workload.

Method: the standard suite's fleet (8 engines in 2 simulator processes, small KV cache), the same rate and
request count for both tools, one round per seed; within a round the four (tool, contender) runs go in a
seeded shuffled order, each with a fresh router process and every engine's prefix cache reset. guidellm runs
from its own virtualenv, offline (bench/crosscheck_guidellm.py). The figures and the agreement test are in
bench/crosscheck_report.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import random
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import orjson

from bench import contenders as contender_registry
from bench import crosscheck_guidellm as guidellm
from bench.contenders import Contender
from bench.crosscheck_cpu import group_cpu, group_processes, group_wait, own_cpu, sampling
from bench.crosscheck_report import TOOLS, XRun, analyse, render, runs_from_json, to_json
from bench.fleet import Fleet
from bench.procs import BenchError
from bench.progress import Progress
from bench.results import (
    EngineCounters,
    RequestResult,
    histogram_quantile,
    hit_rate,
    merge_buckets,
    summarise,
)
from bench.runner import describe, replay, wall_slo
from bench.suites import REPORTED_SEEDS, SGLANG_BEST, Suite, WorkloadRun, standard
from bench.workloads import Workload, build

OURS = "flotilla:default"
#: the best peer configuration on ``gsp`` in the standard suite's run (docs/benchmarks.md)
PEER = SGLANG_BEST
#: a guidellm run includes its own start-up (torch and transformers imports, worker processes)
GUIDELLM_TIMEOUT = 600.0


@dataclass(frozen=True)
class CrossSpec:
    suite: Suite  # the fleet, slo and warm-up of the standard suite, with its gsp run only
    run: WorkloadRun
    ours: str = OURS
    peer: str = PEER
    #: nice value every router runs at (None: inherited); see :func:`renice_group`
    router_nice: int | None = None

    @property
    def shape(self) -> guidellm.Shape:
        p = self.run.params
        return guidellm.Shape(
            prefixes=p["groups"], prefix_tokens=p["system_len"], question_tokens=p["question_len"],
            output_tokens=p["output_len"], requests=p["groups"] * p["prompts_per_group"], rate=self.run.rate,
            warmup=self.suite.warmup,
        )  # fmt: skip


def crosscheck_spec(
    *, quick: bool, seed: int, seeds: int | None, contenders: list[str] | None, router_nice: int | None = None
) -> CrossSpec:
    """The standard suite's gsp (``--quick``: half the requests, two rounds)."""
    suite = standard(0)
    run = next(r for r in suite.runs if r.workload == "gsp")
    if quick:
        run = dataclasses.replace(run, params={**run.params, "prompts_per_group": 4})
    first = seed if seed != 0 else REPORTED_SEEDS[0]
    count = seeds if seeds is not None else (2 if quick else len(REPORTED_SEEDS))
    ours, peer = contenders if contenders is not None else [OURS, PEER]
    run = dataclasses.replace(run, contenders=(ours, peer))
    suite = dataclasses.replace(
        suite, name="crosscheck", runs=(run,), seeds=tuple(range(first, first + count))
    )
    return CrossSpec(suite=suite, run=run, ours=ours, peer=peer, router_nice=router_nice)


def renice_group(pgid: int, nice: int) -> int:
    """Set ``nice`` on every thread of every process in group ``pgid`` (Linux nice is per thread, and the Rust
    routers run a thread pool); returns how many threads were set.

    Why: on this 2-core machine a router shares the CPUs with the engines, the load generator and other work;
    raising every router's priority alike tells a router that is slow from one that waits for a CPU
    (docs/benchmarks.md, "Independent cross-check")."""
    count = 0
    for entry, _ in group_processes(pgid):
        try:
            for task in (entry / "task").iterdir():
                os.setpriority(os.PRIO_PROCESS, int(task.name), nice)
                count += 1
        except (OSError, IndexError, ValueError) as exc:
            if isinstance(exc, PermissionError):
                raise BenchError(f"cannot set nice {nice} on the router (below 0 needs root): {exc}") from exc
            continue  # exited meanwhile
    return count


def round_order(seed: int, contenders: tuple[str, str]) -> list[tuple[str, str]]:
    """The round's four (tool, contender) runs in a seeded shuffled order."""
    order = [(tool, c) for tool in TOOLS for c in contenders]
    random.Random(f"crosscheck/{seed}").shuffle(order)
    return order


def find_guidellm() -> Path:
    """``$FLOTILLA_GUIDELLM``, else ``.venv-xc/bin/guidellm`` here or in the repository, else PATH."""
    candidates = [os.environ.get("FLOTILLA_GUIDELLM", "")]
    candidates += [
        str(base / ".venv-xc/bin/guidellm") for base in (Path.cwd(), Path(__file__).resolve().parents[1])
    ]
    candidates.append(shutil.which("guidellm") or "")
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return Path(c)
    raise BenchError(f"guidellm not found: {guidellm.INSTALL_HINT}")


def guidellm_version(exe: Path) -> str:
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=120,
                         env=guidellm.offline_env(os.environ, workers=1))  # fmt: skip
    match = re.search(r"\d+\.\d+\.\d+\S*", out.stdout + out.stderr)
    return match.group(0) if match else "unknown"


def span_rate(results: list[RequestResult]) -> float:
    """Completed requests ÷ (last completion − first actual send), from offsets in seconds."""
    ok = [r for r in results if r.ok and not math.isnan(r.e2e)]
    sends = [r.scheduled + r.send_lag for r in results if not math.isnan(r.send_lag)]
    if not ok or not sends:
        return math.nan
    span = max(r.scheduled + r.e2e for r in ok) - min(sends)
    return len(ok) / span if span > 0 else math.nan


def run_dir(work: Path, seed: int, position: int, contender: str) -> Path:
    """Where one guidellm run keeps its scenario, log and report."""
    return work / f"seed{seed}-{position}-{re.sub(r'[^A-Za-z0-9_.-]', '-', contender)[:40]}"


def reparse(out: Path, runs: list[XRun]) -> int:
    """Re-read what guidellm itself reported from its reports still under ``out`` (engine-side figures are
    kept); returns how many were re-read."""
    count = 0
    for r in runs:
        path = run_dir(out.resolve() / "guidellm", r.seed, r.position, r.contender) / "benchmarks.json"
        if r.tool != "guidellm" or not path.exists():
            continue
        tool = guidellm.parse_report(orjson.loads(path.read_bytes()))
        r.requests, r.ok, r.ttft_samples, r.req_s = tool.requests, tool.ok, tool.ttft_samples, tool.req_s
        r.reported_p50, r.reported_p90, r.send_lag = tool.reported_p50, tool.reported_p90, tool.send_lag
        count += 1
    return count


def _prompt_tokens(deltas: list[EngineCounters]) -> float:
    requests = sum(d.requests for d in deltas)
    return sum(d.prompt_tokens for d in deltas) / requests if requests else math.nan


async def measure(
    spec: CrossSpec, fleet: Fleet, tool: str, name: str, workload: Workload, seed: int, position: int, *,
    exe: Path, tokenizer: Path, workdir: Path, progress: Progress,
) -> XRun:  # fmt: skip
    """One tool against one freshly started contender, every engine's prefix cache reset first."""
    suite = spec.suite
    contender: Contender = contender_registry.parse(name)
    if (reason := contender.unavailable()) is not None:
        raise BenchError(f"{name}: {reason}")
    progress.step(f"seed {seed} · {tool} · {name}", len(workload))
    await contender.start(fleet.urls, model=suite.fleet.model, kv_events=fleet.kv_event_endpoints())
    proc = getattr(contender, "proc", None)
    router = proc.popen.pid if proc is not None else None
    if router is not None and spec.router_nice is not None:
        renice_group(router, spec.router_nice)
    tool_pid: list[int] = []  # guidellm's process group, once started
    sources = {
        "router": (lambda: group_cpu(router)) if router is not None else (lambda: math.nan),
        "router_wait": (lambda: group_wait(router)) if router is not None else (lambda: math.nan),
        "tool": own_cpu
        if tool == "flotilla-bench"
        else (lambda: group_cpu(tool_pid[0]) if tool_pid else 0.0),
    }
    try:
        await fleet.reset_prefix_caches()
        before = await fleet.scrape()
        load = os.getloadavg()[0]
        async with sampling(sources) as cpu:
            if tool == "flotilla-bench":
                started = time.time()
                results, wall = await replay(spec.run, workload, contender, suite, seed, progress)
                window = (started, time.time())
            else:
                where = run_dir(workdir, seed, position, name)
                scenario = guidellm.scenario(
                    spec.shape, target=contender.base_url.removesuffix("/v1"), model=suite.fleet.model,
                    tokenizer=tokenizer, seed=seed, out=where / "benchmarks.json",
                )  # fmt: skip
                tool_run = await guidellm.run(exe, scenario, where, workers=spec.shape.workers,
                                              within=GUIDELLM_TIMEOUT, on_start=tool_pid.append)  # fmt: skip
                window = tool_run.window
        after = await fleet.scrape()
    finally:
        contender.stop()
    deltas = [a.minus(b) for a, b in zip(after, before, strict=True)]
    if tool == "flotilla-bench":
        summary = summarise(
            workload=spec.run.workload, contender=name, results=results, duration=wall, deltas=deltas,
            oracle_hit_rate=math.nan, slo=wall_slo(suite), warmup=math.floor(len(workload) * suite.warmup), seed=seed,
        )  # fmt: skip
        tool_run = guidellm.ToolRun(
            requests=summary.requests, ok=summary.ok, ttft_samples=summary.ttft_samples,
            reported_p50=summary.ttft_p50, reported_p90=summary.ttft_p90, req_s=span_rate(results),
            send_lag=summary.max_send_lag,
        )  # fmt: skip
    x = XRun(
        tool=tool, contender=name, seed=seed, position=position, requests=tool_run.requests, ok=tool_run.ok,
        ttft_samples=tool_run.ttft_samples, reported_p50=tool_run.reported_p50, reported_p90=tool_run.reported_p90,
        req_s=tool_run.req_s, hit_rate=hit_rate(deltas), engine_prompt_tokens=_prompt_tokens(deltas), load_avg=load,
        send_lag=tool_run.send_lag,
        engine_ttft_p90=histogram_quantile(merge_buckets([d.ttft_buckets for d in deltas]), 0.9),
        tool_cpu_s=cpu.between("tool", *window), router_cpu_s=cpu.between("router", *window),
        router_wait_s=cpu.between("router_wait", *window),
    )  # fmt: skip
    progress.finish_step(
        f"ok {x.ok}/{x.requests}, TTFT p90 {x.reported_p90 * 1000:.0f} ms, hit {x.hit_rate:.0%}"
    )
    return x


async def run_crosscheck(spec: CrossSpec, *, exe: Path, work: Path, progress: Progress) -> list[XRun]:
    """Every round; guidellm's runs keep their files under ``work`` (an absolute path: guidellm runs in it)."""
    progress.message("making guidellm's tokenizer from its own Faker text (flotilla.tokenizer_files)")
    tokenizer = guidellm.write_tokenizer(
        work / "tokenizer", await guidellm.faker_corpus(exe.parent / "python")
    )
    progress.message(f"starting {spec.suite.fleet.engines} simulated engines ({spec.suite.fleet.preset})")
    fleet = await Fleet.start(spec.suite.fleet)
    runs: list[XRun] = []
    try:
        for seed in spec.suite.seeds:
            workload = build(spec.run.workload, seed=seed, params=spec.run.params)
            for position, (tool, name) in enumerate(round_order(seed, (spec.ours, spec.peer))):
                runs.append(await measure(spec, fleet, tool, name, workload, seed, position, exe=exe,
                                          tokenizer=tokenizer, workdir=work, progress=progress))  # fmt: skip
    finally:
        fleet.stop()
    return runs


def interfaces() -> list[str]:
    """The network interfaces of this process's network namespace (only ``lo`` inside ``unshare -n``)."""
    try:
        return sorted(name for _, name in socket.if_nameindex())
    except OSError:
        return []


def cli_run(
    *, quick: bool, out: Path, seed: int, seeds: int | None, contenders: set[str] | None, rerender: bool,
    command: str, router_nice: int | None = None,
) -> None:  # fmt: skip
    """``flotilla bench --suite crosscheck``: run (or re-render) and write report.md + results.json."""
    if rerender:
        try:
            data = orjson.loads((out / "results.json").read_bytes())
            runs = runs_from_json(data)
            if n := reparse(out, runs):
                click.echo(f"re-read {n} guidellm reports under {out / 'guidellm'}")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise click.ClickException(f"cannot read cross-check results from {out}: {exc}") from exc
        _write(out, runs, data["meta"])
        return
    pair = None
    if contenders is not None:
        ours = sorted(c for c in contenders if c.startswith("flotilla:"))
        peers = sorted(c for c in contenders if not c.startswith("flotilla:"))
        if len(ours) != 1 or len(peers) != 1:
            raise click.UsageError(
                "--suite crosscheck compares two contenders: one flotilla:<strategy> and one peer"
            )
        pair = [ours[0], peers[0]]
    spec = crosscheck_spec(quick=quick, seed=seed, seeds=seeds, contenders=pair, router_nice=router_nice)
    try:
        exe = find_guidellm()
        version = guidellm_version(exe)
        load_before = os.getloadavg()[0]
        progress = Progress(len(spec.suite.seeds) * 4)
        runs = asyncio.run(run_crosscheck(spec, exe=exe, work=out.resolve() / "guidellm", progress=progress))
    except BenchError as exc:
        raise click.ClickException(str(exc)) from exc
    meta = {
        "command": command, "guidellm": str(exe), "guidellm_version": version, "seeds": list(spec.suite.seeds),
        "shape": dataclasses.asdict(spec.shape), "fleet": dataclasses.asdict(spec.suite.fleet),
        "ours": spec.ours, "peer": spec.peer, "interfaces": interfaces(), "offline_env": guidellm.OFFLINE,
        "load_avg": [load_before, os.getloadavg()[0]], "cpus": os.cpu_count() or 0, "router_nice": router_nice,
        "oracle_hit_rate": describe(build("gsp", seed=spec.suite.seeds[0], params=spec.run.params), spec.run.rate,
                                    spec.suite).oracle_hit_rate,
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    _write(out, runs, meta)


def _write(out: Path, runs: list[XRun], meta: dict[str, Any]) -> None:
    report = analyse(runs, ours=meta["ours"], peer=meta["peer"])
    shape, load = meta["shape"], meta["load_avg"]
    switches = ", ".join(f"{k}={v}" for k, v in meta["offline_env"].items())
    notes = [
        f"guidellm {meta['guidellm_version']} from its own venv, offline ({switches}); network interfaces the run "
        f"could use: {', '.join(meta['interfaces']) or 'unknown'}",
        f"workload: {shape['prefixes']} shared prefixes × {shape['prefix_tokens']} tokens, {shape['question_tokens']}"
        f"-token question, {shape['output_tokens']} output tokens, {shape['requests']} requests per run at "
        f"{shape['rate']:g} req/s (Poisson); seeds {', '.join(map(str, meta['seeds']))}",
        f"machine load average (1 min) {load[0]:.1f} at the start and {load[1]:.1f} at the end, on "
        f"{meta['cpus']} CPUs",
    ]
    if meta.get("router_nice") is not None:
        notes.append(
            f"every router ran at nice {meta['router_nice']} (`--router-nice`); the load generators at 0"
        )
    data = to_json(report, runs, {"meta": meta})
    (out / "results.json").write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    (out / "report.md").write_text(render(report, command=meta["command"], notes=notes))
    click.echo(f"report: {out / 'report.md'}")
