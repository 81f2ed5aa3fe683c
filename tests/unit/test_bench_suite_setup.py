"""The routing suites' setup: seeds, shuffled contender order, fleet split, peer knobs (no servers)."""

from __future__ import annotations

import pytest

from bench import contenders
from bench.fleet import FleetSpec
from bench.procs import StartError
from bench.runner import contender_order
from bench.suites import REPORTED_SEEDS, TUNING_SEEDS, standard, sweep


def test_standard_reports_five_seeds_none_of_them_tuning_seeds() -> None:
    suite = standard(0)
    assert len(suite.seeds) >= 5
    assert not set(suite.seeds) & set(TUNING_SEEDS)
    assert suite.seeds == REPORTED_SEEDS
    assert set(sweep(0).seeds) == set(TUNING_SEEDS)
    assert suite.fleet.engines >= 8
    assert len(suite.fleet.split()) >= 2
    closed = {r.workload for r in suite.runs if r.closed_loop}
    assert closed == {"multiturn", "agentic"}
    every = {c for r in suite.runs for c in r.contenders}
    assert {"vllm-router:consistent_hash", "vllm-router:power_of_two", "vllm-router:kv_aware"} <= every


def test_contender_order_is_shuffled_per_seed_and_reproducible() -> None:
    names = tuple(f"c{i}" for i in range(8))
    orders = {tuple(contender_order(names, seed=s, workload="gsp")) for s in range(6)}
    assert len(orders) > 1
    assert contender_order(names, seed=3, workload="gsp") == contender_order(names, seed=3, workload="gsp")
    assert sorted(contender_order(names, seed=3, workload="gsp")) == sorted(names)


@pytest.mark.parametrize(("engines", "processes", "split"), [(8, 2, [4, 4]), (5, 2, [3, 2]), (2, 4, [1, 1])])
def test_fleet_split(engines: int, processes: int, split: list[int]) -> None:
    assert FleetSpec(engines=engines, processes=processes).split() == split


def test_peer_knobs_become_flags() -> None:
    c = contenders.parse("sglang:cache_aware/cache-threshold=0.5/balance-abs-threshold=8")
    assert isinstance(c, contenders._RustRouter)
    argv = c.argv(["http://127.0.0.1:1"], "m", [])
    assert argv[argv.index("--cache-threshold") + 1] == "0.5"
    assert argv[argv.index("--balance-abs-threshold") + 1] == "8"
    assert argv[argv.index("--policy") + 1] == "cache_aware"
    with pytest.raises(StartError, match="bad router knob"):
        contenders.parse("sglang:cache_aware/max-tree-size=3")
    with pytest.raises(StartError, match="needs a number"):
        contenders.parse("vllm-router:cache_aware/cache-threshold=high")


def test_contender_filter_keeps_named_ones_and_runs_a_variant_beside_its_base() -> None:
    variant = "flotilla:default+FLOTILLA_GATEWAY_INDEX_ENGINE_CAPACITY=false"
    suite = standard(0).with_filters(
        workloads={"multiturn", "gsp"},
        contenders={"flotilla:default", variant, "vllm-router:consistent_hash"},
        overhead=False,
    )
    by_workload = {run.workload: run.contenders for run in suite.runs}
    assert by_workload["multiturn"] == ("flotilla:default", variant, "vllm-router:consistent_hash")
    assert by_workload["gsp"] == ("flotilla:default", variant)  # consistent_hash is not a gsp contender
