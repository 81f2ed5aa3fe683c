"""From scrapes to fleet samples: totals, counter and histogram deltas, gateway demand, absent vs zero."""

from __future__ import annotations

import math

import pytest

from autoscaler import (
    ARRIVALS,
    DEMAND,
    KV_CACHE,
    METRICS,
    RPS,
    RUNNING,
    TTFT_P95,
    WAITING,
    GatewayScrape,
    PodScrape,
    Sampler,
    Scrape,
    gateway_metrics_url,
    histogram_quantile,
)
from autoscaler.collector import parse_finished
from flotilla.crds import modelautoscaler
from flotilla.demand import ModelDemand
from flotilla.vllm_metrics import parse_metrics

BOUNDS = (0.1, 0.5, 1.0, 5.0, math.inf)


def page(running: float, waiting: float, kv: float, finished: float, ttft: tuple[float, ...]) -> str:
    lines = [
        f'vllm:num_requests_running{{engine="0",model_name="m"}} {running}',
        f'vllm:num_requests_waiting{{engine="0",model_name="m"}} {waiting}',
        f'vllm:kv_cache_usage_perc{{engine="0",model_name="m"}} {kv}',
        f'vllm:request_success_total{{engine="0",finished_reason="stop",model_name="m"}} {finished * 0.75}',
        f'vllm:request_success_total{{engine="0",finished_reason="length",model_name="m"}} {finished * 0.25}',
    ]
    for bound, count in zip(BOUNDS, ttft, strict=True):
        le = "+Inf" if math.isinf(bound) else str(bound)
        lines.append(
            f'vllm:time_to_first_token_seconds_bucket{{engine="0",le="{le}",model_name="m"}} {count}'
        )
    return "\n".join(lines) + "\n"


def pod(url: str, *args: object) -> PodScrape:
    return PodScrape(url, parse_metrics(page(*args), latency=True))  # type: ignore[arg-type]


def test_latency_families_only_when_asked():
    text = page(1, 2, 0.5, 40, (1, 2, 3, 4, 4))
    assert parse_metrics(text).ttft_buckets == ()
    full = parse_metrics(text, latency=True)
    assert full.requests_finished == 40
    assert full.ttft_buckets == ((0.1, 1.0), (0.5, 2.0), (1.0, 3.0), (5.0, 4.0), (math.inf, 4.0))


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, [(1.0, 0.0), (2.0, 10.0), (math.inf, 10.0)], 1.5),
        (0.95, [(1.0, 50.0), (2.0, 100.0), (math.inf, 100.0)], 1.9),
        (0.95, [(1.0, 0.0), (math.inf, 10.0)], 1.0),
        (0.5, [(1.0, 0.0), (math.inf, 0.0)], None),
        (0.5, [], None),
    ],
    ids=["mid-bucket", "p95", "inf-bucket", "no-counts", "empty"],
)
def test_histogram_quantile(q, buckets, expected):
    assert histogram_quantile(q, buckets) == (pytest.approx(expected) if expected is not None else None)


def test_totals_rates_and_ttft_from_deltas():
    sampler = Sampler(["m"])
    first = sampler.sample(
        Scrape((pod("a", 2, 1, 0.5, 100, (0, 0, 0, 0, 0)), pod("b", 3, 0, 0.25, 10, (0, 0, 0, 0, 0)))), 0.0
    )
    assert first.values[RUNNING] == 5
    assert first.values[WAITING] == 1
    assert first.values[KV_CACHE] == pytest.approx(0.75)
    assert RPS not in first.values
    assert TTFT_P95 not in first.values
    second = sampler.sample(
        Scrape((pod("a", 2, 1, 0.5, 120, (0, 10, 20, 20, 20)), pod("b", 3, 0, 0.25, 30, (0, 0, 0, 0, 0)))),
        10.0,
    )
    assert second.values[RPS] == pytest.approx(4.0)  # (20 + 20) / 10 s
    # only pod a saw first tokens: p95 of its 20 deltas lies in (0.5, 1.0]; value = p95 x 1 reporting pod
    assert second.values[TTFT_P95] == pytest.approx(0.5 + 0.5 * (19 - 10) / 10)
    assert second.ready == 2
    assert second.busy


def test_counter_reset_counts_the_new_reading():
    sampler = Sampler(["m"])
    sampler.sample(Scrape((pod("a", 0, 0, 0, 500, (0, 0, 0, 0, 0)),)), 0.0)
    after = sampler.sample(Scrape((pod("a", 0, 0, 0, 10, (0, 0, 0, 0, 0)),)), 5.0)
    assert after.values[RPS] == pytest.approx(2.0)


def test_failed_pod_keeps_its_previous_reading_and_is_counted_missing():
    sampler = Sampler(["m"])
    sampler.sample(Scrape((pod("a", 1, 0, 0, 10, (0, 0, 0, 0, 0)),)), 0.0)
    failed = sampler.sample(Scrape((PodScrape("a", None, "timeout"),)), 5.0)
    assert failed.missing == 1
    assert failed.ready == 0
    assert RUNNING not in failed.values  # blind, not idle
    back = sampler.sample(Scrape((pod("a", 1, 0, 0, 30, (0, 0, 0, 0, 0)),)), 10.0)
    assert back.values[RPS] == pytest.approx(2.0)


def test_gateway_demand_summed_over_gateways_and_names():
    sampler = Sampler(["m", "m-adapter"])
    scrape = Scrape(
        gateways=(
            GatewayScrape("g1", {"m": ModelDemand(2, 3), "other": ModelDemand(9, 9)}),
            GatewayScrape("g2", {"m-adapter": ModelDemand(1, 0)}),
            GatewayScrape("g3", None, "refused"),
        )
    )
    sample = sampler.sample(scrape, 0.0)
    assert (sample.queued, sample.in_flight) == (3, 3)
    assert sample.values[DEMAND] == 6
    assert sample.ready == 0
    assert sample.values[RUNNING] == 0
    assert sample.busy


def test_no_gateway_answer_means_no_demand_metric():
    sample = Sampler(["m"]).sample(Scrape(gateways=(GatewayScrape("g", None, "down"),)), 0.0)
    assert DEMAND not in sample.values
    assert not sample.busy


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/metrics"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/metrics"),
        ("http://127.0.0.1:9090/stats/prom", "http://127.0.0.1:9090/stats/prom"),
    ],
    ids=["bare", "slash", "explicit-path"],
)
def test_gateway_metrics_url(url, expected):
    assert gateway_metrics_url(url) == expected


def test_metric_names_match_the_crd():
    assert set(modelautoscaler.METRICS) == set(METRICS)


def test_arrivals_are_finished_plus_the_change_in_demand():
    sampler = Sampler(["m"])

    def gw(finished: float, queued: float, in_flight: float, url: str = "g") -> GatewayScrape:
        return GatewayScrape(url, {"m": ModelDemand(queued, in_flight)}, finished={"m": finished, "x": 99})

    first = sampler.sample(Scrape(gateways=(gw(100, 0, 2),)), 0.0)
    assert ARRIVALS not in first.values  # a rate needs two readings
    # 10 s later: 30 more finished, demand 2 -> 12: 40 arrived
    second = sampler.sample(Scrape(gateways=(gw(130, 4, 8),)), 10.0)
    assert second.values[ARRIVALS] == pytest.approx(4.0)
    # a backlog that drains while nothing arrives is not an arrival rate
    third = sampler.sample(Scrape(gateways=(gw(142, 0, 0),)), 20.0)
    assert third.values[ARRIVALS] == pytest.approx(0.0)
    # the gateway restarted: its counter went down, everything it reports is new
    fourth = sampler.sample(Scrape(gateways=(gw(5, 0, 5),)), 30.0)
    assert fourth.values[ARRIVALS] == pytest.approx(1.0)


def test_parse_finished_sums_endpoints_and_statuses():
    text = (
        "# TYPE flotilla_gateway_requests counter\n"
        'flotilla_gateway_requests_total{endpoint="a",model="m",status="200"} 3.0\n'
        'flotilla_gateway_requests_total{endpoint="b",model="m",status="503"} 2.0\n'
        'flotilla_gateway_requests_created{endpoint="a",model="m",status="200"} 1.7e9\n'
        'flotilla_gateway_requests_total{endpoint="a",model="n",status="200"} 1.0\n'
    )
    assert parse_finished(text) == {"m": 5.0, "n": 1.0}
