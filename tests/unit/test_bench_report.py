"""Report rendering and plots from a hand-made result (no servers)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.overhead import OverheadRow
from bench.plots import render_plots
from bench.report import behind, render
from bench.results import RunSummary, skipped_summary
from bench.runner import SuiteResult, WorkloadInfo

SEEDS = (101, 102, 103, 104, 105)


def _run(
    contender: str, ttft_p90: float, goodput: float, hit: float, *, ok: int = 40, seed: int = 101
) -> RunSummary:
    # 40 requests per seed, TTFTs spread evenly up to ~ttft_p90/0.9; failures (40 − ok) are None (+inf)
    samples: list[float | None] = [ttft_p90 * (i + 1) / 40 / 0.9 * (1 + 0.01 * (seed % 7)) for i in range(ok)]
    samples += [None] * (40 - ok)
    return RunSummary(
        workload="gsp", contender=contender, requests=40, ok=ok, duration=2.0,
        ttft_p50=ttft_p90 / 2, ttft_p90=ttft_p90, ttft_p99=ttft_p90 * 1.5, itl_p50=0.014, itl_p90=0.02,
        itl_p99=0.03, e2e_p50=0.5, e2e_p90=0.9, output_tok_s=100.0, req_s=5.0,
        goodput_req_s=goodput * (1 + 0.001 * (seed % 5)), hit_rate=hit, oracle_hit_rate=0.8, imbalance=1.2,
        engine_requests=[20, 20], max_send_lag=0.001, errors={}, seed=seed, ttft_samples=samples,
    )  # fmt: skip


def _seeds(contender: str, ttft_p90: float, goodput: float, hit: float, *, ok: int = 40) -> list[RunSummary]:
    return [_run(contender, ttft_p90, goodput, hit, ok=ok, seed=s) for s in SEEDS]


def _result() -> SuiteResult:
    info = WorkloadInfo(name="gsp", description="generated shared prefix: test", requests=40, rate=5.0,
                        prompt_tokens=20000, working_set_tokens=8192, working_set_vs_engine=2.0,
                        working_set_vs_cluster=0.5, oracle_hit_rate=0.8)  # fmt: skip
    return SuiteResult(
        suite="quick", command="flotilla bench --quick",
        fleet={"engines": 2, "preset": "a100-llama3-8b", "model": "m", "num_gpu_blocks": 256, "block_size": 16,
               "time_scale": 1.0, "seed": 0},
        workloads=[info],
        runs=[
            *_seeds("direct", 5.0, 0.5, 0.3, ok=28),
            *_seeds("flotilla:default", 0.2, 4.0, 0.7),
            *_seeds("flotilla:round-robin", 0.6, 3.0, 0.25),
            *_seeds("sglang:cache_aware", 0.1, 4.0, 0.78),
            *_seeds("sglang:round_robin", 0.2, 4.0, 0.3),
            skipped_summary("gsp", "vllm-router:cache_aware", "vllm-router is not installed"),
        ],
        overhead=[
            OverheadRow("direct", latency_p50=0.002, latency_p99=0.004, req_s=900, chunks_s=15000),
            OverheadRow("flotilla:default", latency_p50=0.003, latency_p99=0.006, added_p50=0.001,
                        added_p99=0.002, req_s=600, chunks_s=9000, pinned=True),
            OverheadRow("sglang:round_robin", latency_p50=0.0025, latency_p99=0.005, added_p50=0.0005,
                        added_p99=0.001, req_s=500, chunks_s=6000, pinned=True),
        ],
        notes=["a note"],
        seeds=list(SEEDS),
        warmup=0.1,
    )  # fmt: skip


def _row(text: str, contender: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| `{contender}` |"))


def test_render_has_tables_intervals_verdicts_and_skips() -> None:
    text = render(_result(), {"gsp": ["gsp.png"], "overhead": ["overhead.png"]})
    assert text.startswith("## flotilla bench — quick suite")
    assert "Command: `flotilla bench --quick`" in text
    assert "256 KV blocks × 16 tokens = 4,096 tokens per engine" in text
    assert "Trace seeds 101, 102, 103, 104, 105" in text
    assert "the first 10% of each trace's requests are a warm-up" in text
    assert "2.00× one engine's KV cache, 50% of the cluster's" in text
    assert "infinite-cache oracle hit rate **80%**" in text
    ours = _row(text, "flotilla:default")
    assert ours.startswith("| `flotilla:default` | 200 | 200/200 | ")  # n over 5 seeds, ok/requests
    assert " [" in ours  # every figure has its interval
    # 30 % of direct's requests failed: its p90 and p99 are infinite, not the successful requests' tail
    assert "| ∞ |" in _row(text, "direct").replace("∞ [∞, ∞]", "∞") or "inf" in _row(text, "direct")
    assert "skipped: vllm-router is not installed" in text
    # ratios with intervals and verdicts: the faster peer is a loss, the slower round robin a win
    assert "loss" in _row(text.split("against each contender")[1], "sglang:cache_aware")
    assert "win" in _row(text.split("against each contender")[1], "flotilla:round-robin")
    assert "![gsp](gsp.png)" in text
    assert "![overhead](overhead.png)" in text
    assert "> note: a note" in text
    assert (
        "| `flotilla:default` | yes | 3.00 | 6.00 | +1.00 | +2.00 | 600 | 0.67× | 9000 | 0.60× | 0 |" in text
    )


def test_behind_states_only_losses_whose_interval_excludes_one() -> None:
    joined = "\n".join(behind(_result()))
    assert "`gsp`: TTFT p90 loss against `sglang:cache_aware`" in joined
    assert "`gsp`: hit rate loss against `sglang:cache_aware`" in joined
    assert "goodput" not in joined  # equal goodput: level
    assert "sglang:round_robin`:" not in joined  # same TTFT p90: level, not a loss
    assert "direct" not in joined
    assert "round-robin" not in joined
    assert "adds +1.00 ms at p50 vs +0.50 ms for `sglang:round_robin`" in joined


def test_behind_nowhere() -> None:
    result = _result()
    result.runs = [r for r in result.runs if r.contender not in {"sglang:cache_aware", "sglang:round_robin"}]
    result.overhead = result.overhead[:2]
    assert behind(result) == []
    assert "No loss" in render(result, {})


def test_inert_routing_is_marked() -> None:
    text = render(_result(), {})
    # direct sends everything to engine 0 in the fleet sense only when engine_requests say so; here both engines
    # served requests, but its hit rate is below round robin's
    assert "cache-aware routing did nothing" in _row(text, "direct")
    assert "did nothing" not in _row(text, "sglang:cache_aware")


def test_plots_are_written(tmp_path: Path) -> None:
    files = render_plots(_result(), tmp_path)
    assert files == {"gsp": ["gsp.png"], "overhead": ["overhead.png"]}
    for name in ("gsp.png", "overhead.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b"\x89PNG")
        assert len(data) > 5000


def test_nan_renders_as_dash() -> None:
    result = _result()
    result.workloads[0].oracle_hit_rate = math.nan
    assert "infinite-cache oracle hit rate **–**" in render(result, {})


@pytest.mark.parametrize("heading", ["#", "##"], ids=["report", "docs-section"])
def test_heading_level(heading: str) -> None:
    assert render(_result(), {}, heading=heading).startswith(f"{heading} flotilla bench")


def test_goals_against_the_best_peer() -> None:
    text = render(_result(), {})
    assert "### Goals against the best peer configuration" in text
    goals = text.split("### Goals against the best peer configuration")[1]
    assert "TTFT p90 ≤ 0.8× `sglang:cache_aware`" in goals  # the best peer by TTFT p90
    assert "**missed**" in goals  # ours is twice as slow
    assert "hit rate ≥ 0.95× infinite oracle" in goals


def test_results_json_round_trip_renders_the_same_report() -> None:
    from bench.store import from_json, to_json

    result = _result()
    again = from_json(to_json(result))
    assert render(again, {"gsp": ["gsp.png"]}) == render(result, {"gsp": ["gsp.png"]})
    assert math.isnan(again.runs[-1].ttft_p90)  # NaN survives as null -> NaN
    assert again.seeds == list(SEEDS)
    assert again.runs[0].ttft_samples[-1] is None  # a failure survives as null
