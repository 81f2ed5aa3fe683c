"""``ModelGroup`` (short name ``mg``): serve one model on any of several GPU types at one SLO, at least cost.

Why a kind of its own and not more fields on ``ModelAutoscaler``: an autoscaler targets *one* object and
turns a per-pod metric into *its* replica count; the GPU optimizer decides for *several* objects at once
(how many L4s and how many A100s) and also tells the gateway which request sizes go where. AIBrix keeps the
two apart in the same way (its GPU optimizer computes replicas per deployment, its PodAutoscaler applies
them). So a ModelGroup names its members — one ModelDeployment per GPU type, each with
``spec.gpuType`` — and the operator's group controller observes the gateways' request-size counter over
``windowSeconds``, solves Mélange's integer program on the profiles in ``profiles.configMapName`` and the
prices, and writes each member's replicas through its ``/scale`` subresource within the member's bounds.
The plan (GPUs per type, and the share of each size bucket each type serves) goes to the status, where the
gateways read it for size-aware routing.

A member that a ModelAutoscaler also targets is *not* written by the group (two writers of one ``/scale``
would fight): the group still plans and routes for it and says so in the member's status.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, model_validator
from pydantic.config import JsonDict

from flotilla.crds._base import DNS_LABEL, ApiModel, Condition, OpaqueObject, condition_list

_DATE_TIME: JsonDict = {"format": "date-time"}

#: GPU type names: lowercase DNS labels (they become the pod label ``flotilla.dev/gpu-type``)
GPU_TYPE = DNS_LABEL


class GroupMember(ApiModel):
    """One ModelDeployment of the group (its ``spec.gpuType`` says which GPU type it runs on)."""

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

    name: str = Field(min_length=1, max_length=253, description="ModelDeployment name (same namespace).")
    min_replicas: int = Field(default=0, ge=0, le=1000, description="The group never sets fewer replicas.")
    max_replicas: int = Field(default=10, ge=0, le=1000, description="The group never sets more replicas.")

    @model_validator(mode="after")
    def _bounds(self) -> GroupMember:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must be <= maxReplicas")
        return self


class GroupSlo(ApiModel):
    """The latency objective every request should meet; must match a table of each member's profile."""

    ttft_seconds: float = Field(gt=0, le=3600, description="Time to first token, seconds.")
    tpot_seconds: float = Field(gt=0, le=60, description="Mean time per output token, seconds.")
    attainment: float = Field(
        default=0.99, gt=0, le=1, description="Share of requests that must meet both bounds."
    )


class ProfileSource(ApiModel):
    config_map_name: str = Field(
        min_length=1,
        max_length=253,
        description="ConfigMap (same namespace) whose data values are profile files from `flotilla profile` "
        "(one per GPU type; the key names do not matter).",
    )


class ModelGroupSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.members.all(m, self.members.exists_one(n, n.name == m.name))",
                    "message": "each member may be listed once",
                },
            ]
        }
    )

    model: str = Field(
        min_length=1,
        max_length=253,
        description="Served model name the members share (what clients put in the OpenAI 'model' field).",
    )
    members: list[GroupMember] = Field(
        min_length=1, max_length=16, description="The ModelDeployments, one per GPU type."
    )
    slo: GroupSlo = Field(description="Latency objective the plan must meet.")
    profiles: ProfileSource = Field(description="Where the GPU profiles are.")
    prices: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict,
        description="Dollars per GPU-hour by GPU type, over the built-in on-demand list (docs/optimizer.md).",
    )
    window_seconds: float = Field(
        default=300, ge=1, le=86400, description="Workload observation window (gateways' size counter)."
    )
    sync_period_seconds: float = Field(
        default=30, ge=0.5, le=3600, description="How often the controller observes, solves and applies."
    )
    stabilization_seconds: float = Field(
        default=300,
        ge=0,
        le=86400,
        description="A member scales down only to the highest count planned over this long (HPA's "
        "scale-down stabilisation), so a noisy workload does not flap replicas.",
    )
    slice_factor: int = Field(default=8, ge=1, le=64, description="Slices per size bucket in the program.")
    headroom: float = Field(
        default=1.0, gt=0, le=1, description="Plan each GPU at most this fraction of its profiled capacity."
    )


class MemberStatus(ApiModel):
    name: str = Field(description="ModelDeployment name.", max_length=253)
    gpu_type: str = Field(default="", description="Its spec.gpuType.", max_length=63)
    planned_replicas: int = Field(default=0, ge=0, description="GPUs of this type in the plan.")
    desired_replicas: int = Field(
        default=0, ge=0, description="Planned, held by stabilisation and clamped to the member's bounds."
    )
    replicas: int = Field(default=0, ge=0, description="Replicas of the member when last read.")
    scaled_by: str = Field(
        default="",
        max_length=300,
        description="ModelAutoscaler/<name> when an autoscaler owns this member's replicas (not written).",
    )


class TypeShare(ApiModel):
    gpu_type: str = Field(description="GPU type.", max_length=63)
    shares: list[list[float]] = Field(
        description="shares[i][j]: fraction of input bucket i × output bucket j this type serves."
    )


class GroupPlan(ApiModel):
    """The plan in force: what the gateways route by (``split``) and what the replicas follow."""

    input_bounds: list[int] = Field(description="Prompt-token bucket upper bounds.", max_length=64)
    output_bounds: list[int] = Field(description="Output-token bucket upper bounds.", max_length=64)
    split: list[TypeShare] = Field(description="Share of each bucket per GPU type.", max_length=16)
    rate: float = Field(default=0, ge=0, description="Observed requests per second over the window.")
    cost_per_hour: float = Field(default=0, ge=0, description="Dollars per hour of the planned GPUs.")
    best_single_cost_per_hour: float | None = Field(
        default=None, description="Dollars per hour of the cheapest single GPU type, for comparison."
    )
    time: str | None = Field(default=None, description="When it was computed.", json_schema_extra=_DATE_TIME)


class ModelGroupStatus(ApiModel):
    plan: GroupPlan | None = Field(default=None, description="The plan in force.")
    members: list[MemberStatus] = Field(default_factory=list, max_length=16, description="Per member.")
    cost_per_hour: float = Field(default=0, ge=0, description="Dollars per hour of the planned GPUs.")
    gpus: str = Field(
        default="", max_length=1024, description="Planned GPUs per type, e.g. 'l4=2 a100-80gb=1'."
    )
    observed_generation: int = Field(default=0, ge=0, description="Last reconciled .metadata.generation.")
    conditions: list[Condition] = condition_list()


class ModelGroup(ApiModel):
    """One model served on several GPU types, sized and routed by the GPU optimizer."""

    api_version: str = Field(default="flotilla.dev/v1alpha1", alias="apiVersion")
    kind: str = "ModelGroup"
    metadata: OpaqueObject = Field(default_factory=dict)
    spec: ModelGroupSpec
    status: ModelGroupStatus = Field(default_factory=ModelGroupStatus)
