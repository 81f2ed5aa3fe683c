"""``LoRAAdapter`` (short name ``lora``): a LoRA adapter served on the pods of one ModelDeployment.

The LoRA manager (a later issue) places the adapter on ``replicas`` pods chosen by the placement policy and
loads it through vLLM's ``/v1/load_lora_adapter``; the gateway then routes requests naming the adapter to
those pods. Sources are restricted to URL schemes the loader knows how to fetch, so a typo is rejected by the
API server instead of failing on a pod minutes later:

- ``hf://org/repo[@revision]`` — Hugging Face Hub;
- ``s3://bucket/key``, ``gs://bucket/key`` — object stores (credentials from ``credentialsSecret``);
- ``https://host/path`` — a plain download (no ``http://``: adapters are code-adjacent, so TLS is required);
- ``file:///abs/path`` — a path already present in the engine image or a mounted volume;
- ``pvc://claim-name/path`` — a path on a PersistentVolumeClaim mounted into the engine pods.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from flotilla.crds._base import DNS_LABEL, ApiModel, Condition, OpaqueObject, condition_list

#: the URL schemes an adapter may come from (see the module docstring)
SOURCE_SCHEMES: tuple[str, ...] = ("hf", "s3", "gs", "https", "file", "pvc")
SOURCE_RULE = "self.matches('^(" + "|".join(SOURCE_SCHEMES) + r")://[^\\s]+$')"
SOURCE_MESSAGE = "source must be a URL with one of the schemes " + ", ".join(
    f"{s}://" for s in SOURCE_SCHEMES
)


class Placement(ApiModel):
    """How the LoRA manager picks pods for the adapter."""

    policy: Literal["LeastLoaded", "Packed", "Spread"] = Field(
        default="LeastLoaded",
        description="LeastLoaded: pods with the fewest resident adapters; Packed: fill pods that already "
        "serve adapters first (keeps others free); Spread: across nodes first.",
    )


class LoRAAdapterSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.replicas) || !has(self.maxReplicas) || self.replicas <= self.maxReplicas",
                    "message": "replicas must be <= maxReplicas",
                }
            ]
        }
    )

    base_model_deployment: str = Field(
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL,
        description="Name of the ModelDeployment (same namespace) whose pods serve the adapter.",
    )
    source: str = Field(
        min_length=1,
        max_length=2048,
        description="Where the adapter weights are: hf://, s3://, gs://, https://, file:// or pvc:// URL.",
        json_schema_extra={"x-kubernetes-validations": [{"rule": SOURCE_RULE, "message": SOURCE_MESSAGE}]},
    )
    adapter_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="Name clients use in the OpenAI 'model' field; defaults to metadata.name.",
    )
    rank: int | None = Field(
        default=None, ge=1, le=512, description="Adapter rank, when known (checked against maxLoraRank)."
    )
    replicas: int | None = Field(
        default=None, ge=1, description="Pods to load the adapter on; unset = every pod of the base."
    )
    max_replicas: int | None = Field(default=None, ge=1, description="Upper bound when replicas is unset.")
    placement: Placement = Field(default_factory=Placement, description="Pod selection policy.")
    credentials_secret: str | None = Field(
        default=None,
        max_length=253,
        description="Secret (same namespace) with credentials for s3://, gs:// or hf:// sources.",
    )


class LoRAAdapterStatus(ApiModel):
    phase: Literal["Pending", "Loading", "Ready", "Failed"] = Field(
        default="Pending", description="Summary of the adapter's placement."
    )
    loaded_pods: list[str] = Field(
        default_factory=list, max_length=1000, description="Pods that serve the adapter."
    )
    ready_replicas: int = Field(default=0, ge=0, description="Number of pods serving the adapter.")
    observed_generation: int = Field(default=0, ge=0, description="Last reconciled .metadata.generation.")
    conditions: list[Condition] = condition_list()


class LoRAAdapter(ApiModel):
    """A LoRA adapter served on the pods of a ModelDeployment."""

    api_version: str = Field(default="flotilla.dev/v1alpha1", alias="apiVersion")
    kind: str = "LoRAAdapter"
    metadata: OpaqueObject = Field(default_factory=dict)
    spec: LoRAAdapterSpec
    status: LoRAAdapterStatus = Field(default_factory=LoRAAdapterStatus)
