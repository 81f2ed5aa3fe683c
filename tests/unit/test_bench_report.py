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


def _run(contender: str, ttft_p90: float, goodput: float, hit: float, *, ok: int = 10) -> RunSummary:
    return RunSummary(
        workload="gsp", contender=contender, requests=10, ok=ok, duration=2.0,
        ttft_p50=ttft_p90 / 2, ttft_p90=ttft_p90, ttft_p99=ttft_p90 * 1.5, itl_p50=0.014, itl_p90=0.02,
        itl_p99=0.03, e2e_p50=0.5, e2e_p90=0.9, output_tok_s=100.0, req_s=5.0, goodput_req_s=goodput,
        hit_rate=hit, oracle_hit_rate=0.8, imbalance=1.2, engine_requests=[5, 5], max_send_lag=0.001,
        errors={},
    )  # fmt: skip


def _result() -> SuiteResult:
    info = WorkloadInfo(name="gsp", description="generated shared prefix: test", requests=10, rate=5.0,
                        prompt_tokens=20000, working_set_tokens=8192, working_set_vs_engine=2.0,
                        working_set_vs_cluster=0.5, oracle_hit_rate=0.8)  # fmt: skip
    return SuiteResult(
        suite="quick", command="flotilla bench --quick",
        fleet={"engines": 2, "preset": "a100-llama3-8b", "model": "m", "num_gpu_blocks": 256, "block_size": 16,
               "time_scale": 1.0, "seed": 0},
        workloads=[info],
        runs=[
            _run("direct", 5.0, 0.5, 0.3, ok=7),
            _run("flotilla:default", 0.2, 4.0, 0.7),
            _run("flotilla:round-robin", 0.6, 3.0, 0.25),
            _run("sglang:cache_aware", 0.1, 4.0, 0.78),
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
    )  # fmt: skip


def test_render_has_tables_ratios_and_skips() -> None:
    text = render(_result(), {"gsp": ["gsp.png"], "overhead": ["overhead.png"]})
    assert text.startswith("## flotilla bench — quick suite")
    assert "Command: `flotilla bench --quick`" in text
    assert "256 KV blocks × 16 tokens = 4,096 tokens per engine" in text
    assert "2.00× one engine's KV cache, 50% of the cluster's" in text
    assert "infinite-cache oracle hit rate **80%**" in text
    assert "| `flotilla:default` | 10/10 | 100 | 200 | 300 |" in text
    assert "| `direct` | 7/10 |" in text
    assert "skipped: vllm-router is not installed" in text
    # ratios against every contender that ran, theirs ÷ ours for TTFT
    assert "| `direct` | 25.00× | 25.00× | 8.00× | 1.00× | 2.33× |" in text
    assert "| `sglang:cache_aware` | 0.50× | 0.50× | 1.00× | 1.00× | 0.90× |" in text
    assert "![gsp](gsp.png)" in text
    assert "![overhead](overhead.png)" in text
    assert "> note: a note" in text
    assert (
        "| `flotilla:default` | yes | 3.00 | 6.00 | +1.00 | +2.00 | 600 | 0.67× | 9000 | 0.60× | 0 |" in text
    )


def test_behind_states_where_a_peer_wins() -> None:
    lines = behind(_result())
    joined = "\n".join(lines)
    assert "TTFT p90 of `flotilla:default` is 200 ms vs 100 ms for `sglang:cache_aware`" in joined
    assert "hit rate of `flotilla:default` is 70% vs 78% for `sglang:cache_aware`" in joined
    assert "goodput" not in joined  # level within 5 %
    assert "direct" not in joined
    assert "round-robin" not in joined
    assert "adds +1.00 ms at p50 vs +0.50 ms for `sglang:round_robin`" in joined
    assert "req/s" not in joined  # 600 > 500


def test_behind_nowhere() -> None:
    result = _result()
    result.runs = [r for r in result.runs if r.contender != "sglang:cache_aware"]
    result.overhead = result.overhead[:2]
    assert behind(result) == []
    assert "Nowhere by more than 5 %" in render(result, {})


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


def test_best_of_compares_best_strategy_with_best_peer() -> None:
    text = render(_result(), {})
    assert "### Best of each" in text
    assert "| `gsp` | `flotilla:default` | 200 | 70% | `sglang:cache_aware` | 100 | 78% | 0.50× |" in text


def test_results_json_round_trip_renders_the_same_report() -> None:
    from bench.store import from_json, to_json

    result = _result()
    again = from_json(to_json(result))
    assert render(again, {"gsp": ["gsp.png"]}) == render(result, {"gsp": ["gsp.png"]})
    assert math.isnan(again.runs[-1].ttft_p90)  # NaN survives as null -> NaN
