"""Result records and the statistics computed from them (pure: no I/O, so unit-testable).

Latencies are wall-clock seconds measured by the client from each request's *scheduled* send time. Hit rates
come from the engines' own ``vllm:prefix_cache_{hits,queries}_total`` counters (Δhits ÷ Δqueries over a run),
not from anything the router claims.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.stats import percentile_inf


@dataclass
class RequestResult:
    """What the streaming client saw for one request."""

    index: int
    scheduled: float  # offset from run start, seconds
    ok: bool = False
    status: int = 0
    error: str = ""
    ttft: float = math.nan  # first content chunk − scheduled
    e2e: float = math.nan  # last byte − scheduled
    send_lag: float = math.nan  # actual send − scheduled (load-generator health)
    itls: list[float] = field(default_factory=list)  # gaps between content chunks
    chunks: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


@dataclass(frozen=True)
class EngineCounters:
    """A scrape of one engine's cumulative counters."""

    prefix_hits: float = 0.0
    prefix_queries: float = 0.0
    requests: float = 0.0
    prompt_tokens: float = 0.0
    generation_tokens: float = 0.0
    #: the engine's own ``vllm:time_to_first_token_seconds`` histogram: cumulative (upper bound, count) pairs,
    #: in the simulator's *simulated* seconds — the GPU's view, without any router's or client's CPU cost
    ttft_buckets: tuple[tuple[float, float], ...] = ()

    def minus(self, earlier: EngineCounters) -> EngineCounters:
        before = dict(earlier.ttft_buckets)
        return EngineCounters(
            prefix_hits=self.prefix_hits - earlier.prefix_hits,
            prefix_queries=self.prefix_queries - earlier.prefix_queries,
            requests=self.requests - earlier.requests,
            prompt_tokens=self.prompt_tokens - earlier.prompt_tokens,
            generation_tokens=self.generation_tokens - earlier.generation_tokens,
            ttft_buckets=tuple((le, n - before.get(le, 0.0)) for le, n in self.ttft_buckets),
        )


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float:
    """Prometheus' ``histogram_quantile`` over cumulative (upper bound, count) buckets: linear within the bucket
    the rank falls in (the first bucket from 0); NaN without observations, the last finite bound past it."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return math.nan
    rank = q * ordered[-1][1]
    prev_le, prev_n = 0.0, 0.0
    for le, n in ordered:
        if n >= rank:
            if math.isinf(le):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_n) / (n - prev_n) if n > prev_n else 0.0)
        prev_le, prev_n = le, n
    return prev_le


def merge_buckets(per_engine: Sequence[Sequence[tuple[float, float]]]) -> list[tuple[float, float]]:
    """The fleet's histogram: the engines' cumulative bucket counts summed per upper bound."""
    total: dict[float, float] = {}
    for buckets in per_engine:
        for le, n in buckets:
            total[le] = total.get(le, 0.0) + n
    return sorted(total.items())


@dataclass(frozen=True)
class SLO:
    """A request is *good* when it succeeded, its TTFT ≤ ``ttft`` and its mean ITL ≤ ``itl`` (seconds)."""

    ttft: float = 2.0
    itl: float = 0.1


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100) with linear interpolation between closest ranks; NaN for no values."""
    data = sorted(v for v in values if not math.isnan(v))
    if not data:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    pos = (len(data) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def mean_itl(result: RequestResult) -> float:
    return sum(result.itls) / len(result.itls) if result.itls else math.nan


def is_good(result: RequestResult, slo: SLO) -> bool:
    if not result.ok or math.isnan(result.ttft) or result.ttft > slo.ttft:
        return False
    itl = mean_itl(result)
    return math.isnan(itl) or itl <= slo.itl


def imbalance(loads: Sequence[float]) -> float:
    """max ÷ mean of per-engine load (1.0 = perfectly even; N = everything on one of N engines)."""
    if not loads:
        return math.nan
    mean = sum(loads) / len(loads)
    return max(loads) / mean if mean > 0 else math.nan


def hit_rate(deltas: Sequence[EngineCounters]) -> float:
    queries = sum(d.prefix_queries for d in deltas)
    return sum(d.prefix_hits for d in deltas) / queries if queries > 0 else math.nan


@dataclass
class RunSummary:
    """One contender on one workload: the numbers that go into the report."""

    workload: str
    contender: str
    requests: int
    ok: int
    duration: float
    ttft_p50: float
    ttft_p90: float
    ttft_p99: float
    itl_p50: float
    itl_p90: float
    itl_p99: float
    e2e_p50: float
    e2e_p90: float
    output_tok_s: float
    req_s: float
    goodput_req_s: float
    hit_rate: float
    oracle_hit_rate: float
    imbalance: float
    engine_requests: list[float]
    max_send_lag: float
    errors: dict[str, int]
    skipped: str = ""
    #: the machine's 1-minute load average when the run started (other work on a shared machine shows here)
    load_avg: float = math.nan
    #: the seed of the trace (workload, arrivals, think times) this run replayed
    seed: int = 0
    #: the first requests (in send order) left out of the latency figures: the warm-up window
    warmup: int = 0
    #: TTFT of every request after the warm-up, in send order; None = failed or timed out (counted as +inf)
    ttft_samples: list[float | None] = field(default_factory=list)
    #: p90 of the engines' own TTFT histogram over the whole run (simulated seconds; no router CPU in it)
    engine_ttft_p90: float = math.nan

    def ttfts(self) -> list[float]:
        """:attr:`ttft_samples` with failures as +inf (what every percentile of this run is taken over)."""
        return [math.inf if v is None or math.isnan(v) else v for v in self.ttft_samples]

    @property
    def success_rate(self) -> float:
        return self.ok / self.requests if self.requests else math.nan

    @property
    def hit_vs_oracle(self) -> float:
        if math.isnan(self.hit_rate) or not self.oracle_hit_rate > 0:
            return math.nan
        return self.hit_rate / self.oracle_hit_rate

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["success_rate"] = self.success_rate
        data["hit_vs_oracle"] = self.hit_vs_oracle
        return data


def summarise(
    *,
    workload: str,
    contender: str,
    results: Sequence[RequestResult],
    duration: float,
    deltas: Sequence[EngineCounters],
    oracle_hit_rate: float,
    slo: SLO,
    warmup: int = 0,
    seed: int = 0,
) -> RunSummary:
    """Fold per-request results and per-engine counter deltas into a :class:`RunSummary`.

    Latency percentiles are over the requests after the first ``warmup`` (in send order), with every failed or
    timed-out one counted as +inf, so a contender cannot improve its tail by dropping requests.
    """
    ok = [r for r in results if r.ok]
    measured = sorted(results, key=lambda r: (r.scheduled, r.index))[warmup:]
    samples: list[float | None] = [r.ttft if r.ok and not math.isnan(r.ttft) else None for r in measured]
    ttfts = [math.inf if v is None else v for v in samples]
    itls = [gap for r in ok for gap in r.itls]
    e2es = [r.e2e for r in ok]
    errors: dict[str, int] = {}
    for r in results:
        if not r.ok:
            key = r.error.split(":", 1)[0] or f"HTTP {r.status}"
            errors[key] = errors.get(key, 0) + 1
    span = duration if duration > 0 else math.nan
    lags = [r.send_lag for r in results if not math.isnan(r.send_lag)]
    return RunSummary(
        workload=workload,
        contender=contender,
        requests=len(results),
        ok=len(ok),
        duration=duration,
        ttft_p50=percentile_inf(ttfts, 50),
        ttft_p90=percentile_inf(ttfts, 90),
        ttft_p99=percentile_inf(ttfts, 99),
        itl_p50=percentile(itls, 50),
        itl_p90=percentile(itls, 90),
        itl_p99=percentile(itls, 99),
        e2e_p50=percentile(e2es, 50),
        e2e_p90=percentile(e2es, 90),
        output_tok_s=sum(r.completion_tokens for r in ok) / span,
        req_s=len(ok) / span,
        goodput_req_s=sum(1 for r in results if is_good(r, slo)) / span,
        hit_rate=hit_rate(deltas),
        oracle_hit_rate=oracle_hit_rate,
        imbalance=imbalance([d.requests for d in deltas]),
        engine_requests=[d.requests for d in deltas],
        max_send_lag=max(lags) if lags else math.nan,
        errors=errors,
        seed=seed,
        warmup=warmup,
        ttft_samples=samples,
        engine_ttft_p90=histogram_quantile(merge_buckets([d.ttft_buckets for d in deltas]), 0.9),
    )


def skipped_summary(workload: str, contender: str, reason: str) -> RunSummary:
    """A placeholder row for a contender that could not run (e.g. its package is not installed)."""
    nan = math.nan
    return RunSummary(
        workload=workload, contender=contender, requests=0, ok=0, duration=nan,
        ttft_p50=nan, ttft_p90=nan, ttft_p99=nan, itl_p50=nan, itl_p90=nan, itl_p99=nan,
        e2e_p50=nan, e2e_p90=nan, output_tok_s=nan, req_s=nan, goodput_req_s=nan,
        hit_rate=nan, oracle_hit_rate=nan, imbalance=nan, engine_requests=[], max_send_lag=nan,
        errors={}, skipped=reason,
    )  # fmt: skip


def counters_from_samples(
    samples: Mapping[str, float], ttft_buckets: Sequence[tuple[float, float]] = ()
) -> EngineCounters:
    """Counters from ``{metric name: summed value}`` of one engine's /metrics (names with or without _total)."""

    def get(*names: str) -> float:
        for name in names:
            if name in samples:
                return samples[name]
        return 0.0

    return EngineCounters(
        prefix_hits=get("vllm:prefix_cache_hits_total", "vllm:prefix_cache_hits",
                        "vllm:gpu_prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits"),
        prefix_queries=get("vllm:prefix_cache_queries_total", "vllm:prefix_cache_queries",
                           "vllm:gpu_prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries"),
        requests=get("vllm:request_success_total", "vllm:request_success"),
        prompt_tokens=get("vllm:prompt_tokens_total", "vllm:prompt_tokens"),
        generation_tokens=get("vllm:generation_tokens_total", "vllm:generation_tokens"),
        ttft_buckets=tuple(ttft_buckets),
    )  # fmt: skip
