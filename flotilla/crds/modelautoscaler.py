"""``ModelAutoscaler`` (short name ``mas``): scales a ModelDeployment on engine metrics, KPA- or APA-style.

The autoscaler (a later issue) scrapes the target's pods, computes desired replicas and writes them through
the target's ``/scale`` subresource, so anything with ``/scale`` can be a target. Defaults follow AIBrix's
KPA/APA (stable 180 s / panic 60 s windows, 10 % tolerances, panic threshold 2.0, scale-down cooldown 300 s);
see docs/operator.md for the formulas.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from flotilla.crds._base import ApiModel, Condition, OpaqueObject, condition_list

#: engine metrics the autoscaler understands (vLLM metric names behind them are in docs/operator.md)
METRICS = (
    "num_requests_waiting",
    "num_requests_running",
    "kv_cache_usage",
    "requests_per_second",
    "ttft_p95",
)


class ScaleTargetRef(ApiModel):
    api_version: str = Field(default="flotilla.dev/v1alpha1", description="API version of the target.")
    kind: str = Field(default="ModelDeployment", description="Kind of the target (must serve /scale).")
    name: str = Field(min_length=1, max_length=253, description="Name of the target (same namespace).")


class MetricTarget(ApiModel):
    name: Literal[
        "num_requests_waiting", "num_requests_running", "kv_cache_usage", "requests_per_second", "ttft_p95"
    ] = Field(description="Engine metric, averaged per pod.")
    target: float = Field(
        gt=0, description="Desired per-pod value (kv_cache_usage in 0..1, ttft_p95 in seconds)."
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

    stable_seconds: int = Field(default=180, ge=6, le=3600, description="Stable averaging window.")
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
                }
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
        default=2.0, gt=1, le=100, description="KPA enters panic when panic/stable desire exceeds this."
    )
    scale_up_tolerance: float = Field(default=0.1, ge=0, le=1, description="No scale-up within +this.")
    scale_down_tolerance: float = Field(default=0.1, ge=0, le=1, description="No scale-down within -this.")
    cooldowns: Cooldowns = Field(default_factory=Cooldowns, description="Cooldowns between scalings.")


class ModelAutoscalerStatus(ApiModel):
    current_replicas: int = Field(default=0, ge=0, description="Replicas of the target when last read.")
    desired_replicas: int = Field(default=0, ge=0, description="Replicas the algorithm wants.")
    last_scale_time: str | None = Field(
        default=None,
        description="When the target was last scaled.",
        json_schema_extra={"format": "date-time"},
    )
    panic: bool = Field(default=False, description="KPA panic mode is active.")
    observed_generation: int = Field(default=0, ge=0, description="Last reconciled .metadata.generation.")
    conditions: list[Condition] = condition_list()


class ModelAutoscaler(ApiModel):
    """Scales a ModelDeployment on engine metrics."""

    api_version: str = Field(default="flotilla.dev/v1alpha1", alias="apiVersion")
    kind: str = "ModelAutoscaler"
    metadata: OpaqueObject = Field(default_factory=dict)
    spec: ModelAutoscalerSpec
    status: ModelAutoscalerStatus = Field(default_factory=ModelAutoscalerStatus)
