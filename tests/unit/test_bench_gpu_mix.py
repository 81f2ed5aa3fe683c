"""The GPU-mix benchmark's pure parts: dataset shapes, the plan's dispatch, the report."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from bench.gpu_mix.datasets import DATASETS
from bench.gpu_mix.report import from_json, render, to_json
from bench.gpu_mix.runner import GRID, Case, MixResult, SolverTime, histogram
from bench.gpu_mix.validate import Request, dispatch
from optimizer import Grid


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_dataset_shapes(name: str) -> None:
    rng = random.Random(1)
    sizes = [DATASETS[name](rng) for _ in range(2000)]
    prompts = sorted(p for p, _ in sizes)
    median = prompts[len(prompts) // 2]
    assert {"short": 50 < median < 100, "long": 2500 < median < 3500, "mixed": 60 < median < 200}[name]
    assert all(1 <= o <= 512 and 1 <= p <= 8000 for p, o in sizes)
    shares = histogram(name, GRID, samples=5000)
    assert sum(map(sum, shares)) == pytest.approx(1.0)


def test_dispatch_follows_the_split_and_balances_replicas() -> None:
    grid = Grid(input_bounds=(256, 8192), output_bounds=(512,))
    split = {"a": ((0.75,), (0.0,)), "b": ((0.25,), (1.0,))}
    caps = {"a": ((10.0,), (0.0,)), "b": ((40.0,), (4.0,))}
    reqs = [Request(i * 0.1, 100, 50) for i in range(400)] + [Request(i * 0.1, 3000, 50) for i in range(40)]
    routed = dispatch(reqs, grid, {"a": 2, "b": 1}, split, caps)
    short = Counter(g for (g, _), rs in routed.items() for r in rs if r.prompt == 100)
    assert short == {"a": 300, "b": 100}  # smooth weighted round-robin: exact shares
    assert all(g == "b" for (g, _), rs in routed.items() for r in rs if r.prompt == 3000)
    assert len(routed["a", 0]) == len(routed["a", 1]) == 150


def test_report_round_trips_through_json() -> None:
    case = Case(dataset="short", rate=4.0, slo="tpot=40ms@99.0%", counts={"l4": 2, "h100-80gb": 1}, cost=13.9,
                single_gpu="h100-80gb", single_count=2, single_cost=24.58, saving=0.43, solve_seconds=0.01,
                attainment=0.995, single_attainment=1.0, live_attainment=0.993)  # fmt: skip
    result = MixResult(suite="optimizer", command="flotilla bench --suite optimizer", gpus=["l4", "h100-80gb"],
                       grid={"input_bounds": [64], "output_bounds": [64]}, prices={"l4": 0.8, "h100-80gb": 12.29},
                       profiles={"l4": {"tpot=40ms@99.0%": [[1.0]]}}, cases=[case],
                       solver=[SolverTime(120, 6, 16, [0.1, 0.2, 0.3])], profile_seconds={"l4": 1.0},
                       wall_seconds=3.0)  # fmt: skip
    text = render(result)
    assert (
        "| short | tpot=40ms@99.0% | 4 | 2×l4 + 1×h100-80gb | 13.90 | 2×h100-80gb | 24.58 | 43.0% |" in text
    )
    assert "| 99.5% | 99.3% |" in text
    assert "Plans meeting 99 % attainment on the simulated fleet: 1/1" in text
    assert render(from_json(to_json(result))) == text
