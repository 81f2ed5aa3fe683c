"""The bootstrap statistics of the routing report (bench/stats.py): pure, seeded, no servers."""

from __future__ import annotations

import math

import pytest

from bench.stats import (
    Estimate,
    latency_estimate,
    latency_ratio,
    percentile_inf,
    scalar_estimate,
    scalar_ratio,
    verdict,
)


def _seeds(base: float, n_seeds: int = 5, n: int = 200, spread: float = 0.2) -> list[list[float]]:
    return [[base * (1 + spread * ((i * 37 + s * 11) % n) / n) for i in range(n)] for s in range(n_seeds)]


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([1.0, 2.0, math.inf], 50, 2.0),
        ([1.0, 2.0, math.inf], 75, math.inf),
        ([1.0] * 9 + [math.inf], 90, 1.0),  # 10 % failures: p90 interpolates 1.0 and ∞ at rank 8.1 -> ∞
        ([math.inf, math.inf], 50, math.inf),
    ],
)
def test_percentile_counts_failures_as_infinite(values: list[float], q: float, expected: float) -> None:
    got = percentile_inf(values, q)
    if q == 90 and len(values) == 10:
        assert got == math.inf
    else:
        assert got == expected


def test_percentile_of_nothing_is_nan() -> None:
    assert math.isnan(percentile_inf([], 90))


def test_latency_estimate_is_the_median_of_per_seed_percentiles_inside_its_interval() -> None:
    seeds = _seeds(0.1)
    est = latency_estimate(seeds, 90)
    per_seed = sorted(percentile_inf(s, 90) for s in seeds)
    assert est.value == pytest.approx(per_seed[2])
    assert est.low <= est.value <= est.high
    assert est.high - est.low < 0.05  # 1,000 requests over 5 seeds: a tight interval


def test_latency_estimate_is_reproducible() -> None:
    seeds = _seeds(0.1)
    assert latency_estimate(seeds, 90) == latency_estimate(seeds, 90)


def test_a_clear_difference_is_a_win_and_identical_samples_are_level() -> None:
    slow, fast = _seeds(0.2), _seeds(0.1)
    ratio = latency_ratio(slow, fast, 90)  # theirs ÷ ours
    assert ratio.value == pytest.approx(2.0, rel=0.01)
    assert ratio.low > 1.0
    assert verdict(ratio) == "win"
    same = latency_ratio(fast, fast, 90)
    assert same.low <= 1.0 <= same.high
    assert verdict(same) == "level"
    assert verdict(latency_ratio(fast, slow, 90)) == "loss"


def test_noisy_seeds_widen_the_interval_so_a_small_gap_is_not_a_win() -> None:
    ours = [[0.1 * (1 + 0.5 * (s % 3))] * 100 for s in range(5)]  # seeds differ a lot
    theirs = [[v * 1.05 for v in seed] for seed in reversed(ours)]  # 5 % slower, paired badly
    assert verdict(latency_ratio(theirs, ours, 90)) == "level"


def test_failures_make_the_tail_infinite() -> None:
    ok = _seeds(0.1)
    failing = [s[:170] + [math.inf] * 30 for s in ok]  # 15 % failed per seed
    assert latency_estimate(failing, 90).value == math.inf
    assert latency_estimate(failing, 50).value < math.inf
    assert verdict(latency_ratio(failing, ok, 90)) == "win"  # theirs infinite ÷ ours finite


def test_scalar_estimates_and_ratios() -> None:
    est = scalar_estimate([0.8, 0.82, 0.79, 0.81, math.nan])
    assert est.value == pytest.approx(0.805)
    assert est.low >= 0.79
    assert est.high <= 0.82
    ratio = scalar_ratio([0.5, 0.5, 0.52, 0.49, 0.5], [0.8, 0.82, 0.79, 0.81, 0.8])
    assert verdict(ratio) == "win"
    assert verdict(Estimate(1.0, math.nan, math.nan)) == "–"
    assert verdict(Estimate(0.5, 0.4, 0.6), higher_is_better=False) == "win"
