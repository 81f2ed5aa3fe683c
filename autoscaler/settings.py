"""What one autoscaler is configured with: bounds, metrics and per-pod targets, windows, rates, cooldowns.

The defaults follow AIBrix's PodAutoscaler (itself Knative's KPA plus HPA-style tolerances and cooldowns), with
one deliberate change: scale-to-zero is governed by a grace period of no traffic at all (Knative's 30 s), not
by the metrics, because a queue gauge at zero says nothing about whether requests still arrive. Times are in
seconds; the clock they are measured on is the caller's (the operator uses wall time so that persisted times
survive a restart).

Metric names are the ``ModelAutoscaler`` CRD's (``flotilla/crds/modelautoscaler.py``; a unit test keeps the
two lists equal). What each one measures and why the load is a fleet *total* is in ``sampling.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "ARRIVALS",
    "DEMAND",
    "KV_CACHE",
    "METRICS",
    "RPS",
    "RUNNING",
    "TTFT_P95",
    "WAITING",
    "MetricTarget",
    "ScalerSettings",
]

#: requests waiting in the engines' queues (``vllm:num_requests_waiting``), per pod
WAITING: Final = "num_requests_waiting"
#: requests in the engines' running batches (``vllm:num_requests_running``), per pod
RUNNING: Final = "num_requests_running"
#: KV-cache usage fraction 0–1 (``vllm:kv_cache_usage_perc``, or the old ``gpu_cache_usage_perc``), per pod
KV_CACHE: Final = "kv_cache_usage"
#: finished requests per second (deltas of ``vllm:request_success_total``), per pod
RPS: Final = "requests_per_second"
#: 95th percentile of TTFT in seconds over the requests that got a first token since the previous scrape
TTFT_P95: Final = "ttft_p95"
#: queued + in-flight requests for the model at the gateways (``flotilla.demand``), per pod: Knative's
#: concurrency, and the only signal that exists when the model has zero pods
DEMAND: Final = "gateway_demand"
#: requests per second *arriving* at the gateways for the model: finished (``flotilla_gateway_requests_total``)
#: plus the change in queued + in flight. Unlike concurrency it does not grow with the backlog of an
#: under-provisioned fleet, so a per-pod target at the pod's capacity asks for what the load needs
ARRIVALS: Final = "gateway_requests_per_second"

METRICS: Final = (WAITING, RUNNING, KV_CACHE, RPS, TTFT_P95, DEMAND, ARRIVALS)


@dataclass(frozen=True, slots=True)
class MetricTarget:
    """One metric and the value one pod should carry (e.g. ``MetricTarget(RUNNING, 8)``)."""

    name: str
    target: float

    def __post_init__(self) -> None:
        if self.name not in METRICS:
            raise ValueError(f"unknown metric {self.name!r}; known: {', '.join(METRICS)}")
        if not self.target > 0:
            raise ValueError(f"metric {self.name}: target must be > 0, got {self.target}")


@dataclass(frozen=True, slots=True)
class ScalerSettings:
    """One autoscaler's configuration; invalid combinations raise ``ValueError`` at construction."""

    #: upper bound on replicas
    max_replicas: int
    #: metrics and per-pod targets; each yields a recommendation and the largest wins
    metrics: tuple[MetricTarget, ...]
    #: lower bound; 0 allows scale to zero (after ``scale_to_zero_grace`` without traffic)
    min_replicas: int = 1
    #: policy name in ``autoscaler.registry.POLICIES`` ("KPA" or "APA")
    algorithm: str = "KPA"
    #: averaging window of the stable recommendation (AIBrix 180 s; Knative 60 s)
    stable_window: float = 180.0
    #: averaging window of KPA's panic recommendation (AIBrix 60 s; Knative 10 % of stable)
    panic_window: float = 60.0
    #: KPA enters panic when the panic window wants at least this many times the current replicas (Knative 2.0)
    panic_threshold: float = 2.0
    #: at most ``ceil(rate × current)`` replicas per decision (AIBrix 2)
    max_scale_up_rate: float = 2.0
    #: at least ``floor(current ÷ rate)`` replicas per decision (AIBrix and Knative 2)
    max_scale_down_rate: float = 2.0
    #: no change while per-pod load / target stays within [1 − down, 1 + up] (HPA and AIBrix 0.1)
    scale_up_tolerance: float = 0.1
    scale_down_tolerance: float = 0.1
    #: minimum time since the last scaling before a scale-up (AIBrix 0)
    scale_up_cooldown: float = 0.0
    #: minimum time since the last scaling before a scale-down (AIBrix 300 s, HPA's stabilisation window)
    scale_down_cooldown: float = 300.0
    #: with ``min_replicas == 0``, the last pod goes after this long without any traffic (Knative 30 s)
    scale_to_zero_grace: float = 30.0
    _names: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.min_replicas < 0:
            problems.append("min_replicas must be >= 0")
        if self.max_replicas < 1:
            problems.append("max_replicas must be >= 1")
        if self.min_replicas > self.max_replicas:
            problems.append(f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})")
        if not self.metrics:
            problems.append("at least one metric is needed")
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            problems.append(f"a metric is listed twice: {names}")
        if not 0 < self.panic_window <= self.stable_window:
            problems.append("need 0 < panic_window <= stable_window")
        if self.panic_threshold <= 1:
            problems.append("panic_threshold must be > 1")
        if self.max_scale_up_rate <= 1 or self.max_scale_down_rate <= 1:
            problems.append("max scale-up/down rates must be > 1")
        if self.scale_up_tolerance < 0 or not 0 <= self.scale_down_tolerance < 1:
            problems.append("tolerances must be >= 0 (scale-down tolerance < 1)")
        if min(self.scale_up_cooldown, self.scale_down_cooldown, self.scale_to_zero_grace) < 0:
            problems.append("cooldowns and the grace period must be >= 0")
        if problems:
            raise ValueError("; ".join(problems))
        object.__setattr__(self, "_names", frozenset(names))
