"""The GPU-mix suites and their run: profile the simulated GPUs, plan, validate, time the solver.

For every dataset × rate × SLO: the workload histogram (the dataset's bucket shares × rate) and the profiles
go to the optimizer; its mix and the best single-type fleet (the cheapest fleet of one type, from the same
profiles) are both run on the simulated fleet (:mod:`bench.gpu_mix.validate`) on several seeds, so the cost
comparison is between two fleets that were each seen to meet the SLO, not between two formulas.

Profiles are the expensive part (minutes per GPU type): they are written to ``<out>/profiles/<gpu>.json``
and reused by later runs whose grid, SLOs and preset match (delete the directory to re-profile).
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.gpu_mix.datasets import DATASETS
from bench.gpu_mix.large import instance
from bench.gpu_mix.live import run_live
from bench.gpu_mix.validate import run_fleet, single_type, trace
from flotilla.cli.gpu_probe import simulated_probe
from flotilla.sizes import bucket_index
from optimizer import Grid, InputError, Plan, Profile, Slo, Workload, load_json, profile_gpu, solve

GPUS = ("l4", "a10g", "l40s", "a100-40gb", "a100-80gb", "h100-80gb")
#: Mélange's two TPOT objectives (40 and 120 ms); the TTFT bound keeps a saturated queue from passing
SLOS = (Slo(ttft=5.0, tpot=0.04), Slo(ttft=5.0, tpot=0.12))
GRID = Grid(input_bounds=(64, 256, 1024, 4096, 8192), output_bounds=(64, 256, 512))


@dataclass(frozen=True)
class MixSuite:
    name: str
    gpus: tuple[str, ...] = GPUS
    slos: tuple[Slo, ...] = SLOS
    datasets: tuple[str, ...] = ("short", "long", "mixed")
    rates: tuple[float, ...] = (1.0, 4.0, 16.0, 32.0)
    grid: Grid = GRID
    seeds: tuple[int, ...] = (1, 2)
    #: requests per validation trace: 600 s of arrivals, at least 200 and at most this
    validate_requests: int = 2000
    slice_factor: int = 8
    #: plan each GPU to at most this share of its profiled capacity (optimizer.solve's headroom)
    headroom: float = 1.0
    #: (input buckets, output buckets) of the synthetic solver-time instances, three seeds each
    large: tuple[tuple[int, int], ...] = ((8, 6), (12, 10), (16, 12))
    #: (dataset, rate, index into slos) also run on served engine_sim fleets over HTTP (bench.gpu_mix.live)
    live: tuple[tuple[str, float, int], ...] = (("short", 4.0, 1), ("long", 4.0, 1), ("mixed", 4.0, 1))
    live_requests: int = 600
    live_time_scale: float = 0.25
    #: profiling knobs (optimizer.profile_gpu)
    profile_max_requests: int = 2000
    profile_min_seconds: float = 30.0


def full() -> MixSuite:
    return MixSuite(name="optimizer")


def quick() -> MixSuite:
    return MixSuite(
        name="optimizer-quick", gpus=("a10g", "h100-80gb"), slos=(Slo(ttft=5.0, tpot=0.12),), rates=(2.0, 8.0),
        grid=Grid(input_bounds=(256, 8192), output_bounds=(512,)), seeds=(1,), validate_requests=400,
        large=((12, 10),), profile_max_requests=300, profile_min_seconds=10.0, live=(("mixed", 8.0, 0),),
        live_requests=120, live_time_scale=0.1,
    )  # fmt: skip


MIX_SUITES: dict[str, Callable[[], MixSuite]] = {"optimizer": full, "optimizer-quick": quick}


@dataclass
class Case:
    dataset: str
    rate: float
    slo: str
    counts: dict[str, int]
    cost: float
    single_gpu: str | None
    single_count: int
    single_cost: float | None
    saving: float | None
    solve_seconds: float
    #: min over seeds of the SLO attainment of the mix / of the best single type on the simulated fleet
    attainment: float
    single_attainment: float | None
    #: attainment of the mix on served engine_sim fleets over HTTP (only the suite's ``live`` cases)
    live_attainment: float | None = None
    split: dict[str, list[list[float]]] = field(default_factory=dict)


@dataclass
class SolverTime:
    buckets: int
    gpus: int
    slices: int
    seconds: list[float]


@dataclass
class MixResult:
    suite: str
    command: str
    gpus: list[str]
    grid: dict[str, list[int]]
    prices: dict[str, float]
    profiles: dict[str, dict[str, list[list[float]]]]
    cases: list[Case]
    solver: list[SolverTime]
    profile_seconds: dict[str, float]
    wall_seconds: float
    headroom: float = 1.0


def histogram(dataset: str, grid: Grid, samples: int = 50_000, seed: int = 12345) -> list[list[float]]:
    """Share of the dataset's requests in each bucket (sums to 1)."""
    rng = random.Random(seed)
    rows, cols = grid.shape
    counts = [[0] * cols for _ in range(rows)]
    sampler = DATASETS[dataset]
    for _ in range(samples):
        prompt, output = sampler(rng)
        counts[bucket_index(grid.input_bounds, prompt)][bucket_index(grid.output_bounds, output)] += 1
    return [[c / samples for c in row] for row in counts]


async def load_or_profile(
    suite: MixSuite, gpu: str, out: Path, log: Callable[[str], None]
) -> tuple[Profile, float]:
    path = out / "profiles" / f"{gpu}.json"
    preset = f"{gpu}-llama3-8b"
    if path.exists():
        try:
            cached = load_json(Profile, path, "profile")
            if (
                cached.same_grid(suite.grid)
                and {t.slo for t in cached.tables} == set(suite.slos)
                and (cached.engine == f"engine_sim:{preset}")
            ):
                log(f"profile {gpu}: reusing {path}")
                return cached, 0.0
        except InputError:
            pass
    started = time.perf_counter()
    result = await profile_gpu(
        simulated_probe(preset, suite.slos), suite.grid, suite.slos, gpu=gpu, engine=f"engine_sim:{preset}",
        max_requests=suite.profile_max_requests, min_seconds=suite.profile_min_seconds,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(result.model_dump_json(indent=2) + "\n")
    log(f"profile {gpu}: {elapsed:.0f} s")
    return result, elapsed


def validate(plan: Plan, counts: dict[str, int], split: dict[str, tuple[tuple[float, ...], ...]],
             caps: dict[str, tuple[tuple[float, ...], ...]], suite: MixSuite, dataset: str) -> float:  # fmt: skip
    rate = plan.workload.total
    n = min(suite.validate_requests, max(200, int(rate * 600)))
    worst = 1.0
    for seed in suite.seeds:
        reqs = trace(DATASETS[dataset], rate, n, seed)
        presets = {g: f"{g}-llama3-8b" for g in counts}
        worst = min(worst, run_fleet(reqs, plan.workload, counts, split, caps, presets, plan.slo).attainment)
    return worst


async def run_mix_suite(suite: MixSuite, out: Path, command: str, log: Callable[[str], None]) -> MixResult:
    from optimizer import DEFAULT_PRICES

    started = time.perf_counter()
    profiles, profile_seconds = [], {}
    for gpu in suite.gpus:
        p, s = await load_or_profile(suite, gpu, out, log)
        profiles.append(p)
        profile_seconds[gpu] = s
    prices = {g: DEFAULT_PRICES[g] for g in suite.gpus}
    cases = []
    for dataset in suite.datasets:
        shares = histogram(dataset, suite.grid)
        for slo in suite.slos:
            caps = {p.gpu: p.table(slo).max_rate for p in profiles}
            for rate in suite.rates:
                workload = Workload(
                    input_bounds=suite.grid.input_bounds, output_bounds=suite.grid.output_bounds, model=dataset,
                    rate=tuple(tuple(s * rate for s in row) for row in shares),
                )  # fmt: skip
                plan = solve(
                    profiles, workload, prices, slo, slice_factor=suite.slice_factor, headroom=suite.headroom
                )
                got = validate(plan, plan.counts, plan.split, caps, suite, dataset)
                best = plan.best_single
                single_att = None
                counts_single = 0
                if best is not None:
                    counts1, split1 = single_type(plan, best[0])
                    counts_single = counts1[best[0]]
                    single_att = validate(plan, counts1, split1, caps, suite, dataset)
                case = Case(
                    dataset=dataset, rate=rate, slo=slo.label(), counts={g: n for g, n in plan.counts.items() if n},
                    cost=plan.cost, single_gpu=best[0] if best else None, single_count=counts_single,
                    single_cost=best[1] if best else None, saving=plan.saving, solve_seconds=plan.solve_seconds,
                    attainment=got, single_attainment=single_att,
                    split={g: [list(r) for r in m] for g, m in plan.split.items() if plan.counts[g]},
                )  # fmt: skip
                if (dataset, rate, suite.slos.index(slo)) in suite.live:
                    reqs = trace(DATASETS[dataset], rate, suite.live_requests, suite.seeds[0])
                    case.live_attainment = await run_live(
                        reqs, workload, plan.counts, plan.split, caps, slo, time_scale=suite.live_time_scale
                    )
                    log(
                        f"{dataset} {rate:g} req/s {slo.label()}: served fleet attainment {case.live_attainment:.1%}"
                    )
                cases.append(case)
                log(f"{dataset} {rate:g} req/s {slo.label()}: mix ${plan.cost:.2f}/h {case.counts} "
                    f"(attainment {got:.1%}) vs {case.single_gpu}×{counts_single} ${case.single_cost or 0:.2f}/h "
                    f"({single_att if single_att is None else f'{single_att:.1%}'})")  # fmt: skip
    solver = []
    for inputs, outputs in suite.large:
        times = []
        for seed in (1, 2, 3):
            ps, w, pr, slo = instance(inputs, outputs, seed)
            times.append(solve(ps, w, pr, slo, slice_factor=16).solve_seconds)
        solver.append(SolverTime(inputs * outputs, len(pr), 16, times))
        log(f"solver {inputs * outputs} buckets × {len(pr)} types: median {statistics.median(times):.2f} s")
    return MixResult(
        suite=suite.name, command=command, gpus=list(suite.gpus),
        grid={"input_bounds": list(suite.grid.input_bounds), "output_bounds": list(suite.grid.output_bounds)},
        prices=prices, profiles={p.gpu: {t.slo.label(): [list(r) for r in t.max_rate] for t in p.tables} for p in profiles},
        cases=cases, solver=solver, profile_seconds=profile_seconds, wall_seconds=time.perf_counter() - started,
        headroom=suite.headroom,
    )  # fmt: skip
