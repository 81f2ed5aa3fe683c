"""Poisson scheduler: seeded, starts at 0, monotone, and with the right rate and exponential gaps."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest

from bench.arrivals import poisson_schedule, uniform_schedule


def test_poisson_is_seeded_and_monotone() -> None:
    a = poisson_schedule(500, 10.0, seed=1)
    assert a == poisson_schedule(500, 10.0, seed=1)
    assert a != poisson_schedule(500, 10.0, seed=2)
    assert a[0] == 0.0
    assert all(y >= x for x, y in itertools.pairwise(a))


def test_poisson_rate_and_gap_distribution() -> None:
    rate = 20.0
    offsets = poisson_schedule(20_001, rate, seed=3)
    gaps = [y - x for x, y in itertools.pairwise(offsets)]
    mean = statistics.fmean(gaps)
    assert mean == pytest.approx(1 / rate, rel=0.03)
    # exponential: sd ≈ mean, and P(gap > mean) ≈ e^-1
    assert statistics.pstdev(gaps) == pytest.approx(mean, rel=0.05)
    assert sum(g > mean for g in gaps) / len(gaps) == pytest.approx(math.exp(-1), abs=0.02)
    # counts in 1-second windows are Poisson: variance ≈ mean
    windows: dict[int, int] = {}
    for t in offsets:
        windows[int(t)] = windows.get(int(t), 0) + 1
    counts = [windows.get(i, 0) for i in range(int(offsets[-1]))]
    assert statistics.fmean(counts) == pytest.approx(rate, rel=0.05)
    assert statistics.pvariance(counts) == pytest.approx(rate, rel=0.25)


def test_uniform() -> None:
    assert uniform_schedule(4, 2.0) == [0.0, 0.5, 1.0, 1.5]


@pytest.mark.parametrize(
    ("count", "rate"),
    [(-1, 1.0), (3, 0.0), (3, -2.0), (3, math.nan)],
    ids=["neg-count", "zero", "neg", "nan"],
)
def test_bad_parameters(count: int, rate: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        poisson_schedule(count, rate, seed=0)
