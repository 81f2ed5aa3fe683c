"""``ModelAutoscaler`` (short name ``mas``): scales a ModelDeployment on engine metrics, KPA- or APA-style.

The operator's autoscaler controller scrapes the target's pods (and the gateways' per-model demand), computes
desired replicas and writes them through the target's ``/scale`` subresource, so anything with ``/scale`` can
be a target. Defaults follow AIBrix's KPA/APA (stable 180 s / panic 60 s windows, 10 % tolerances, panic
threshold 2.0, scale rates 2, scale-down cooldown 300 s) and Knative's 30 s scale-to-zero grace period; the
formulas and why each default is what it is are in docs/autoscaler.md.

The status doubles as the autoscaler's memory: ``lastScaleTime``, ``lastActiveTime`` and the panic fields are
what the algorithm needs across an operator restart (the windows themselves refill within a stable window,
during which the controller refuses to scale down).
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field
from pydantic.config import JsonDict

from flotilla.crds._base import ApiModel, Condition, OpaqueObject, condition_list

#: metrics the autoscaler understands (the vLLM and gateway metrics behind them are in docs/autoscaler.md)
METRICS = (
    "num_requests_waiting",
    "num_requests_running",
    "kv_cache_usage",
    "requests_per_second",
    "ttft_p95",
    "gateway_demand",
    "gateway_requests_per_second",
)

_DATE_TIME: JsonDict = {"format": "date-time"}


class ScaleTargetRef(ApiModel):
    api_version: str = Field(default="flotilla.dev/v1alpha1", description="API version of the target.")
    kind: str = Field(default="ModelDeployment", description="Kind of the target (must serve /scale).")
    name: str = Field(min_length=1, max_length=253, description="Name of the target (same namespace).")


class MetricTarget(ApiModel):
    name: Literal[
        "num_requests_waiting",
        "num_requests_running",
        "kv_cache_usage",
        "requests_per_second",
        "ttft_p95",
        "gateway_demand",
        "gateway_requests_per_second",
    ] = Field(
        description=(
            "Metric to scale on: engine queue (num_requests_waiting), batch (num_requests_running), KV-cache "
            "fraction (kv_cache_usage), finished requests/s (requests_per_second), TTFT p95 in seconds "
            "(ttft_p95), queued + in-flight requests at the gateways (gateway_demand), or requests/s arriving at the "
            "gateways (gateway_requests_per_second)."
        )
    )
    target: float = Field(
        gt=0, description="Desired value per pod (kv_cache_usage in 0..1, ttft_p95 in seconds)."
    )


class Windows(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.panicSeconds < self.stableSeconds",
                    "message": "windows.panicSeconds must be shorter than windows.stableSeconds",
                }
            ]
        }
    )

    stable_seconds: int = Field(default=180, ge=2, le=3600, description="Stable averaging window.")
    panic_seconds: int = Field(default=60, ge=1, le=3600, description="Panic averaging window (KPA).")


class Cooldowns(ApiModel):
    scale_up_seconds: int = Field(default=0, ge=0, le=3600, description="Minimum time between scale-ups.")
    scale_down_seconds: int = Field(
        default=300, ge=0, le=86400, description="Minimum time after any scaling before a scale-down."
    )


class ModelAutoscalerSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.minReplicas <= self.maxReplicas",
                    "message": "minReplicas must be <= maxReplicas",
                },
                {
                    "rule": "self.metrics.all(m, self.metrics.exists_one(n, n.name == m.name))",
                    "message": "each metric may be listed once",
                },
            ]
        }
    )

    scale_target_ref: ScaleTargetRef = Field(description="The object to scale (through /scale).")
    min_replicas: int = Field(default=1, ge=0, le=1000, description="Lower bound; 0 allows scale to zero.")
    max_replicas: int = Field(ge=1, le=1000, description="Upper bound.")
    metrics: list[MetricTarget] = Field(
        min_length=1, max_length=8, description="Metrics and per-pod targets; the largest desire wins."
    )
    algorithm: Literal["KPA", "APA"] = Field(
        default="KPA", description="KPA: stable/panic windows; APA: tolerance band around the target."
    )
    windows: Windows = Field(default_factory=Windows, description="Averaging windows.")
    panic_threshold: float = Field(
        default=2.0,
        gt=1,
        le=100,
        description="KPA enters panic when the panic window wants this many times the current replicas.",
    )
    scale_up_tolerance: float = Field(default=0.1, ge=0, le=1, description="No scale-up within +this.")
    scale_down_tolerance: float = Field(default=0.1, ge=0, lt=1, description="No scale-down within -this.")
    max_scale_up_rate: float = Field(
        default=2.0, gt=1, le=1000, description="One decision sets at most ceil(rate x current) replicas."
    )
    max_scale_down_rate: float = Field(
        default=2.0, gt=1, le=1000, description="One decision sets at least floor(current / rate) replicas."
    )
    cooldowns: Cooldowns = Field(default_factory=Cooldowns, description="Cooldowns between scalings.")
    scale_to_zero_grace_seconds: int = Field(
        default=30,
        ge=0,
        le=86400,
        description="With minReplicas 0, the last pod goes after this long without any traffic.",
    )
    sync_period_seconds: float = Field(
        default=5.0, ge=0.2, le=300, description="How often the controller scrapes and decides."
    )


class MetricStatus(ApiModel):
    name: str = Field(description="Metric name.", max_length=64)
    total: float = Field(description="Fleet-total load over the stable window (sum over pods or gateways).")
    average_value: float | None = Field(
        default=None, description="Load per ready pod (total / ready pods); absent with no ready pod."
    )
    target: float = Field(description="Target per pod.")
    desired_replicas: int | None = Field(default=None, ge=0, description="Replicas this metric alone wants.")


class ModelAutoscalerStatus(ApiModel):
    current_replicas: int = Field(default=0, ge=0, description="Replicas of the target when last read.")
    desired_replicas: int = Field(default=0, ge=0, description="Replicas the autoscaler last decided.")
    ready_replicas: int = Field(default=0, ge=0, description="Target pods that answered the last scrape.")
    metrics: list[MetricStatus] = Field(
        default_factory=list, max_length=8, description="The metric values the last decision used."
    )
    last_scale_time: str | None = Field(
        default=None, description="When the autoscaler last scaled the target.", json_schema_extra=_DATE_TIME
    )
    last_active_time: str | None = Field(
        default=None,
        description="Last time any traffic was seen (scale-to-zero grace).",
        json_schema_extra=_DATE_TIME,
    )
    panic: bool = Field(default=False, description="KPA panic mode is active.")
    panic_since: str | None = Field(
        default=None, description="When KPA entered panic mode.", json_schema_extra=_DATE_TIME
    )
    panic_last_trigger_time: str | None = Field(
        default=None, description="Last time the panic condition held.", json_schema_extra=_DATE_TIME
    )
    panic_replicas: int = Field(default=0, ge=0, description="Panic mode does not scale below this.")
    observed_generation: int = Field(default=0, ge=0, description="Last reconciled .metadata.generation.")
    conditions: list[Condition] = condition_list()


class ModelAutoscaler(ApiModel):
    """Scales a ModelDeployment on engine metrics."""

    api_version: str = Field(default="flotilla.dev/v1alpha1", alias="apiVersion")
    kind: str = "ModelAutoscaler"
    metadata: OpaqueObject = Field(default_factory=dict)
    spec: ModelAutoscalerSpec
    status: ModelAutoscalerStatus = Field(default_factory=ModelAutoscalerStatus)
