"""Per workload × contender figures over seeds: medians, 95 % bootstrap intervals, paired ratios, verdicts.

Pure functions of the per-seed :class:`~bench.results.RunSummary` rows (see :mod:`bench.stats` for the
bootstrap and why it is two-level). A contender's rows are aligned with the reference's by seed, and only the
seeds both completed enter a ratio.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.results import RunSummary
from bench.stats import (
    NAN,
    Estimate,
    latency_estimate,
    latency_ratio,
    median,
    scalar_estimate,
    scalar_ratio,
    verdict,
)

REFERENCE = "flotilla:default"
PEER_PREFIXES = ("sglang:", "vllm-router:")
#: the goals of issue 13, checked per workload against the best peer configuration
GOAL_TTFT = 0.8  # ours ÷ best peer's TTFT p90, with an interval that excludes 1
GOAL_HIT = 0.95  # ours ÷ infinite-cache oracle


@dataclass
class Row:
    """One contender on one workload, over every seed it ran."""

    contender: str
    seeds: list[int]
    n: int  # measured requests (after warm-up) summed over seeds
    ok: int
    requests: int
    ttft_p50: Estimate
    ttft_p90: Estimate
    ttft_p99: Estimate
    goodput: Estimate
    hit_rate: Estimate
    hit_vs_oracle: float
    imbalance: float
    engine_ttft_p90: Estimate = NAN  # the engines' own histogram, simulated seconds (bootstrap over seeds)
    inert: str = ""  # why this contender's routing provably did nothing, or ""
    skipped: str = ""


@dataclass
class Ratio:
    """``reference`` against ``contender``: every ratio is > 1 when the reference is better."""

    contender: str
    ttft_p50: Estimate = NAN  # theirs ÷ ours
    ttft_p90: Estimate = NAN
    goodput: Estimate = NAN  # ours ÷ theirs
    hit_rate: Estimate = NAN
    engine_ttft_p90: Estimate = NAN  # theirs ÷ ours

    def verdicts(self) -> dict[str, str]:
        names = ("ttft_p50", "ttft_p90", "goodput", "hit_rate", "engine_ttft_p90")
        return {name: verdict(getattr(self, name)) for name in names}


@dataclass
class WorkloadFigures:
    workload: str
    rows: list[Row] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    reference: str = ""
    best_peer: str = ""


def _by_seed(runs: Sequence[RunSummary]) -> dict[int, RunSummary]:
    return {r.seed: r for r in runs if not r.skipped}


def row_of(contender: str, runs: Sequence[RunSummary]) -> Row:
    ran = sorted((r for r in runs if not r.skipped), key=lambda r: r.seed)
    if not ran:
        reason = next((r.skipped for r in runs if r.skipped), "did not run")
        return Row(contender, [], 0, 0, 0, NAN, NAN, NAN, NAN, NAN, math.nan, math.nan, skipped=reason)
    samples = [r.ttfts() for r in ran]
    return Row(
        contender=contender,
        seeds=[r.seed for r in ran],
        n=sum(len(s) for s in samples),
        ok=sum(r.ok for r in ran),
        requests=sum(r.requests for r in ran),
        ttft_p50=latency_estimate(samples, 50),
        ttft_p90=latency_estimate(samples, 90),
        ttft_p99=latency_estimate(samples, 99),
        goodput=scalar_estimate([r.goodput_req_s for r in ran]),
        hit_rate=scalar_estimate([r.hit_rate for r in ran]),
        hit_vs_oracle=median([r.hit_vs_oracle for r in ran]),
        imbalance=median([r.imbalance for r in ran]),
        engine_ttft_p90=scalar_estimate([r.engine_ttft_p90 for r in ran]),
    )


def ratio_of(theirs: Sequence[RunSummary], ours: Sequence[RunSummary], contender: str) -> Ratio:
    a, b = _by_seed(theirs), _by_seed(ours)
    common = sorted(set(a) & set(b))
    if not common:
        return Ratio(contender)
    ta = [a[s].ttfts() for s in common]
    tb = [b[s].ttfts() for s in common]
    return Ratio(
        contender=contender,
        ttft_p50=latency_ratio(ta, tb, 50),
        ttft_p90=latency_ratio(ta, tb, 90),
        goodput=scalar_ratio([a[s].goodput_req_s for s in common], [b[s].goodput_req_s for s in common]),
        hit_rate=scalar_ratio([a[s].hit_rate for s in common], [b[s].hit_rate for s in common]),
        # scalar_ratio gives its second argument ÷ its first: ours first, so this is theirs ÷ ours
        engine_ttft_p90=scalar_ratio(
            [b[s].engine_ttft_p90 for s in common], [a[s].engine_ttft_p90 for s in common]
        ),
    )


def inert_reason(row: Row, runs: Sequence[RunSummary], baseline: Row | None, engines: int) -> str:
    """Why a row's routing measurably did nothing: every request on one engine in every seed, or (on a workload
    with sharing, for a policy that claims cache awareness) a hit-rate interval that overlaps round robin's, so
    the two cannot be told apart."""
    ran = [r for r in runs if not r.skipped]
    if ran and engines > 1 and all(sum(1 for x in r.engine_requests if x > 0) == 1 for r in ran):
        return "every request went to one engine"
    if (
        baseline is not None
        and row.contender != baseline.contender
        and not row.contender.endswith(
            ("round_robin", "round-robin", "power_of_two", "power-of-two", "random")
        )
        and row.hit_rate.low <= baseline.hit_rate.high
    ):
        return f"hit rate indistinguishable from `{baseline.contender}`'s (cache-aware routing did nothing)"
    return ""


def figures(workload: str, runs: Sequence[RunSummary], *, engines: int, sharing: bool) -> WorkloadFigures:
    names = list(dict.fromkeys(r.contender for r in runs))
    by_name = {n: [r for r in runs if r.contender == n] for n in names}
    rows = [row_of(n, by_name[n]) for n in names]
    baseline = next((r for r in rows if r.contender.endswith("round_robin") and not r.skipped), None)
    for row in rows:
        if not row.skipped and sharing:
            row.inert = inert_reason(row, by_name[row.contender], baseline, engines)
        elif not row.skipped:
            row.inert = inert_reason(row, by_name[row.contender], None, engines)
    ours = [r for r in rows if r.contender.startswith("flotilla:") and not r.skipped]
    ref = next((r for r in ours if r.contender == REFERENCE), ours[0] if ours else None)
    out = WorkloadFigures(workload, rows)
    if ref is None:
        return out
    out.reference = ref.contender
    for row in rows:
        if row is not ref and not row.skipped:
            out.ratios.append(ratio_of(by_name[row.contender], by_name[ref.contender], row.contender))
    peers = [r for r in rows if r.contender.startswith(PEER_PREFIXES) and not r.skipped and not r.inert]
    if peers:
        out.best_peer = min(peers, key=lambda r: (r.ttft_p90.value, -r.goodput.value)).contender
    return out


def goals(fig: WorkloadFigures, oracle_hit_rate: float) -> list[tuple[str, str, bool | None]]:
    """(goal, measured, met?) for one workload; None when it cannot be decided (a row is missing)."""
    rows = {r.contender: r for r in fig.rows}
    ratios = {r.contender: r for r in fig.ratios}
    if not fig.reference or not fig.best_peer:
        return []
    ours, best, ratio = rows[fig.reference], rows[fig.best_peer], ratios[fig.best_peer]
    out: list[tuple[str, str, bool | None]] = []
    p90 = ratio.ttft_p90  # theirs ÷ ours; the goal is ours ÷ theirs ≤ 0.8, i.e. theirs ÷ ours ≥ 1.25
    if not math.isnan(p90.value):
        inv = (1 / p90.value, 1 / p90.high if p90.high else math.nan, 1 / p90.low if p90.low else math.nan)
        met = inv[0] <= GOAL_TTFT and p90.low > 1.0
        out.append((f"TTFT p90 ≤ {GOAL_TTFT}× `{best.contender}`, interval excluding 1",
                    f"{inv[0]:.2f}× [{inv[1]:.2f}, {inv[2]:.2f}]", met))  # fmt: skip
    if oracle_hit_rate > 0 and not math.isnan(ours.hit_vs_oracle):
        out.append((f"hit rate ≥ {GOAL_HIT}× infinite oracle", f"{ours.hit_vs_oracle:.2f}×",
                    ours.hit_vs_oracle >= GOAL_HIT))  # fmt: skip
    e = ratio.engine_ttft_p90
    if not math.isnan(e.value) and e.value > 0:
        met = 1 / e.value <= GOAL_TTFT and e.low > 1.0
        out.append((f"engine-side TTFT p90 ≤ {GOAL_TTFT}× `{best.contender}` (no proxy CPU in it)",
                    f"{1 / e.value:.2f}× [{1 / e.high:.2f}, {1 / e.low if e.low else math.inf:.2f}]", met))  # fmt: skip
    g = ratio.goodput
    if not math.isnan(g.value):
        out.append((f"goodput ≥ `{best.contender}`", f"{g.value:.3f}× [{g.low:.3f}, {g.high:.3f}]",
                    g.value >= 1.0 or verdict(g) == "level"))  # fmt: skip
    return out
