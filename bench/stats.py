"""Medians and 95 % bootstrap intervals over seeds and requests (pure: no I/O, injected seed).

Why a two-level (hierarchical) percentile bootstrap: a routing figure varies for two reasons — which trace
was drawn and how loaded the shared machine was during that contender's turn (both change *between seeds*),
and which requests happened to be slow (*within* a seed's run). Resampling only the five-odd seeds gives an
interval that can take only the seeds' own values (five points cannot give a 2.5th percentile); resampling
only requests pretends the machine never drifts. So each bootstrap replicate draws the seeds with
replacement, then each drawn seed's requests with replacement, recomputes the figure per seed and takes the
median over seeds. Ratios are *paired by seed*: one replicate draws the same seeds for both contenders (the
same trace), so the trace's own difficulty cancels and only the routing differs.

Failed and timed-out requests are ``inf``: they count in every percentile (a p90 with more than 10 %
failures is ``inf``) instead of silently leaving the sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: replicates per interval; 2,000 keeps the 2.5/97.5 percentiles stable to well under the intervals' width
REPLICATES = 2000


@dataclass(frozen=True)
class Estimate:
    """A figure's median over seeds and its 95 % bootstrap interval."""

    value: float
    low: float
    high: float

    @property
    def excludes_one(self) -> bool:
        return not (self.low <= 1.0 <= self.high) and not math.isnan(self.low)


NAN = Estimate(math.nan, math.nan, math.nan)


def percentile_inf(values: Sequence[float], q: float) -> float:
    """The q-th percentile (linear interpolation, like :func:`bench.results.percentile`), with ``inf`` allowed:
    if the interpolation touches an ``inf`` the result is ``inf``. NaN for no values."""
    if not values:
        return math.nan
    data = sorted(values)
    pos = (len(data) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    frac = pos - lo
    if frac == 0 or data[lo] == data[hi]:
        return data[lo]
    if math.isinf(data[hi]):
        return math.inf
    return data[lo] + (data[hi] - data[lo]) * frac


def _pct_rows(samples: np.ndarray, q: float) -> np.ndarray:
    """Row-wise q-th percentile of a 2-D array that may hold inf (numpy's linear method, inf-safe)."""
    n = samples.shape[1]
    data = np.sort(samples, axis=1)
    pos = (n - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    a, b = data[:, lo], data[:, hi]
    if frac == 0:
        return a
    with np.errstate(invalid="ignore"):
        out = a + (b - a) * frac
    out = np.where(np.isinf(b), np.inf, out)
    return np.where(a == b, a, out)


def _per_seed_replicates(
    samples: Sequence[float], q: float, rng: np.random.Generator, reps: int
) -> np.ndarray:
    arr = np.asarray(samples, dtype=float)
    idx = rng.integers(0, len(arr), size=(reps, len(arr)))
    return _pct_rows(arr[idx], q)


def percentile_replicates(
    seeds: Sequence[Sequence[float]], q: float, *, rng: np.random.Generator, picks: np.ndarray
) -> np.ndarray:
    """Per replicate, the median over the picked seeds of each seed's resampled q-th percentile.

    ``picks`` (replicates × seeds) are the seed indices drawn for each replicate, shared between contenders
    when a ratio is wanted (paired by seed)."""
    reps = picks.shape[0]
    per_seed = np.stack([_per_seed_replicates(s, q, rng, reps) for s in seeds], axis=1)  # reps × seeds
    chosen = np.take_along_axis(per_seed, picks, axis=1)
    with np.errstate(invalid="ignore"):
        out: np.ndarray = np.median(chosen, axis=1)
    return out


def seed_picks(n_seeds: int, *, rng: np.random.Generator, reps: int = REPLICATES) -> np.ndarray:
    return rng.integers(0, n_seeds, size=(reps, n_seeds))


def _interval(point: float, replicates: np.ndarray) -> Estimate:
    kept = [float(v) for v in replicates if not math.isnan(v)]
    if not kept:
        return Estimate(point, math.nan, math.nan)
    return Estimate(point, percentile_inf(kept, 2.5), percentile_inf(kept, 97.5))


def median(values: Sequence[float]) -> float:
    clean = [v for v in values if not math.isnan(v)]
    return float(np.median(clean)) if clean else math.nan


def latency_estimate(seeds: Sequence[Sequence[float]], q: float, *, seed: int = 0) -> Estimate:
    """Median over seeds of the per-seed q-th percentile, with its hierarchical bootstrap interval."""
    seeds = [s for s in seeds if s]
    if not seeds:
        return NAN
    rng = np.random.default_rng(seed)
    point = median([percentile_inf(s, q) for s in seeds])
    picks = seed_picks(len(seeds), rng=rng)
    return _interval(point, percentile_replicates(seeds, q, rng=rng, picks=picks))


def latency_ratio(
    theirs: Sequence[Sequence[float]], ours: Sequence[Sequence[float]], q: float, *, seed: int = 0
) -> Estimate:
    """theirs ÷ ours of the median-over-seeds q-th percentile, paired by seed (the lists align by seed)."""
    if len(theirs) != len(ours) or not theirs or any(not s for s in (*theirs, *ours)):
        return NAN
    rng = np.random.default_rng(seed)
    picks = seed_picks(len(ours), rng=rng)
    a = percentile_replicates(theirs, q, rng=rng, picks=picks)
    b = percentile_replicates(ours, q, rng=rng, picks=picks)
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = a / b
    point_a = median([percentile_inf(s, q) for s in theirs])
    point_b = median([percentile_inf(s, q) for s in ours])
    return _interval(_safe_div(point_a, point_b), reps)


def scalar_estimate(values: Sequence[float], *, seed: int = 0) -> Estimate:
    """Median over seeds of a per-seed scalar (hit rate, goodput) with a bootstrap-over-seeds interval."""
    clean = [v for v in values if not math.isnan(v)]
    if not clean:
        return NAN
    rng = np.random.default_rng(seed)
    arr = np.asarray(clean)
    reps = np.median(arr[seed_picks(len(arr), rng=rng)], axis=1)
    return _interval(median(clean), reps)


def scalar_ratio(theirs: Sequence[float], ours: Sequence[float], *, seed: int = 0) -> Estimate:
    """ours ÷ theirs of the median per-seed scalar, paired by seed (higher is better for ours)."""
    pairs = [(a, b) for a, b in zip(theirs, ours, strict=True) if not (math.isnan(a) or math.isnan(b))]
    if not pairs:
        return NAN
    rng = np.random.default_rng(seed)
    a = np.asarray([p[0] for p in pairs])
    b = np.asarray([p[1] for p in pairs])
    picks = seed_picks(len(pairs), rng=rng)
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = np.median(b[picks], axis=1) / np.median(a[picks], axis=1)
    return _interval(_safe_div(median(list(b)), median(list(a))), reps)


def _safe_div(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b) or b == 0:
        return math.nan
    if math.isinf(a) and math.isinf(b):
        return math.nan
    return a / b


def verdict(ratio: Estimate, *, higher_is_better: bool = True) -> str:
    """``win`` / ``loss`` only when the interval excludes 1, else ``level`` (``–`` when unknown)."""
    if math.isnan(ratio.low) or math.isnan(ratio.high):
        return "–"
    if ratio.low > 1.0:
        return "win" if higher_is_better else "loss"
    if ratio.high < 1.0:
        return "loss" if higher_is_better else "win"
    return "level"
