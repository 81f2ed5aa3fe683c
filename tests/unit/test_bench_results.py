"""Statistics of a run: percentiles, goodput, imbalance, hit rate, counter parsing."""

from __future__ import annotations

import math

import pytest

from bench.fleet import parse_prometheus
from bench.results import (
    SLO,
    EngineCounters,
    RequestResult,
    counters_from_samples,
    hit_rate,
    imbalance,
    is_good,
    percentile,
    summarise,
)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([5.0], 99, 5.0),
        ([3.0, 1.0, 2.0, math.nan], 50, 2.0),
        (list(map(float, range(101))), 90, 90.0),
    ],
    ids=["median-even", "min", "max", "single", "nan-ignored", "p90"],
)
def test_percentile(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_empty_is_nan() -> None:
    assert math.isnan(percentile([], 50))


@pytest.mark.parametrize(
    ("loads", "expected"),
    [([1, 1, 1, 1], 1.0), ([4, 0, 0, 0], 4.0), ([3, 1], 1.5)],
    ids=["even", "all-on-one", "skewed"],
)
def test_imbalance(loads: list[float], expected: float) -> None:
    assert imbalance(loads) == pytest.approx(expected)


def test_hit_rate_is_summed_hits_over_summed_queries() -> None:
    deltas = [
        EngineCounters(prefix_hits=30, prefix_queries=100),
        EngineCounters(prefix_hits=0, prefix_queries=300),
    ]
    assert hit_rate(deltas) == pytest.approx(30 / 400)
    assert math.isnan(hit_rate([EngineCounters()]))


def _ok(index: int, ttft: float, itls: list[float], tokens: int = 10) -> RequestResult:
    return RequestResult(index=index, scheduled=0.0, ok=True, status=200, ttft=ttft, e2e=ttft + sum(itls),
                         itls=itls, chunks=len(itls) + 1, completion_tokens=tokens, send_lag=0.001)  # fmt: skip


@pytest.mark.parametrize(
    ("result", "good"),
    [
        (_ok(0, 0.5, [0.05, 0.05]), True),
        (_ok(0, 2.5, [0.05]), False),
        (_ok(0, 0.5, [0.3, 0.3]), False),
        (_ok(0, 0.5, []), True),
        (RequestResult(index=0, scheduled=0.0, error="HTTP 500"), False),
    ],
    ids=["good", "slow-ttft", "slow-itl", "single-token", "failed"],
)
def test_goodput_slo(result: RequestResult, good: bool) -> None:
    assert is_good(result, SLO(ttft=2.0, itl=0.1)) is good


def test_summarise() -> None:
    results = [_ok(0, 0.1, [0.01]), _ok(1, 0.3, [0.02]), _ok(2, 3.0, [0.01]),
               RequestResult(index=3, scheduled=1.0, status=503, error="HTTP 503: busy")]  # fmt: skip
    deltas = [EngineCounters(prefix_hits=50, prefix_queries=100, requests=3),
              EngineCounters(prefix_hits=0, prefix_queries=100, requests=1)]  # fmt: skip
    s = summarise(workload="w", contender="c", results=results, duration=2.0, deltas=deltas,
                  oracle_hit_rate=0.5, slo=SLO(ttft=1.0, itl=0.1))  # fmt: skip
    assert (s.requests, s.ok) == (4, 3)
    assert s.success_rate == pytest.approx(0.75)
    # the failed request counts as +inf: p50 of [0.1, 0.3, 3.0, inf] is (0.3 + 3.0) / 2, p90 is inf
    assert s.ttft_p50 == pytest.approx(1.65)
    assert s.ttft_p90 == math.inf
    assert s.ttft_samples == [0.1, 0.3, 3.0, None]
    assert s.goodput_req_s == pytest.approx(2 / 2.0)
    assert s.req_s == pytest.approx(3 / 2.0)
    assert s.output_tok_s == pytest.approx(30 / 2.0)
    assert s.hit_rate == pytest.approx(0.25)
    assert s.hit_vs_oracle == pytest.approx(0.5)
    assert s.imbalance == pytest.approx(1.5)
    assert s.errors == {"HTTP 503": 1}
    assert s.to_json()["success_rate"] == pytest.approx(0.75)
    # a warm-up of 2 leaves the first two sends (by schedule) out of the latency figures only
    w = summarise(workload="w", contender="c", results=results, duration=2.0, deltas=deltas,
                  oracle_hit_rate=0.5, slo=SLO(ttft=1.0, itl=0.1), warmup=2, seed=7)  # fmt: skip
    assert w.ttft_samples == [3.0, None]
    assert (w.requests, w.ok, w.warmup, w.seed) == (4, 3, 2, 7)


METRICS = """\
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 48.0
vllm:prefix_cache_hits_created{engine="0",model_name="m"} 1.7e+09
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 100.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 2.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="m a}b"} 3.0
vllm:num_requests_running 1
"""


def test_parse_prometheus_and_counters() -> None:
    samples = parse_prometheus(METRICS)
    assert samples["vllm:request_success_total"] == 5.0
    assert samples["vllm:num_requests_running"] == 1.0
    c = counters_from_samples(samples)
    assert (c.prefix_hits, c.prefix_queries, c.requests) == (48.0, 100.0, 5.0)
    later = EngineCounters(prefix_hits=60, prefix_queries=150, requests=9)
    assert later.minus(c) == EngineCounters(prefix_hits=12, prefix_queries=50, requests=4)


def test_engine_ttft_histogram_deltas_and_quantile() -> None:
    from bench.fleet import ttft_buckets
    from bench.results import histogram_quantile, merge_buckets

    text = (
        'vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="m"} 5.0\n'
        'vllm:time_to_first_token_seconds_bucket{engine="0",le="0.25",model_name="m"} 9.0\n'
        'vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="m"} 10.0\n'
        'vllm:time_to_first_token_seconds_count{engine="0",model_name="m"} 10.0\n'
    )
    buckets = ttft_buckets(text)
    assert buckets == [(0.1, 5.0), (0.25, 9.0), (math.inf, 10.0)]
    before = EngineCounters(ttft_buckets=((0.1, 1.0), (0.25, 1.0), (math.inf, 1.0)))
    delta = EngineCounters(ttft_buckets=tuple(buckets)).minus(before)
    assert delta.ttft_buckets == ((0.1, 4.0), (0.25, 8.0), (math.inf, 9.0))
    # rank 0.8 × 9 = 7.2 falls in (0.1, 0.25]: 0.1 + 0.15 × (7.2 − 4) / (8 − 4)
    assert histogram_quantile(delta.ttft_buckets, 0.8) == pytest.approx(0.1 + 0.15 * 3.2 / 4)
    assert histogram_quantile(merge_buckets([delta.ttft_buckets, delta.ttft_buckets]), 0.8) == pytest.approx(
        0.1 + 0.15 * 3.2 / 4
    )
    assert histogram_quantile(delta.ttft_buckets, 0.9) == 0.25  # rank 8.1 is past 0.25: the +Inf bucket
    assert histogram_quantile([(0.1, 1.0), (math.inf, 10.0)], 0.9) == 0.1  # past the last finite bound
    assert math.isnan(histogram_quantile([(0.1, 0.0), (math.inf, 0.0)], 0.9))
