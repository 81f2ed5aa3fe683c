"""``LoRAAdapter`` (short name ``lora``): a LoRA adapter served on the pods of one ModelDeployment.

The LoRA manager (``lora_manager`` + the operator's ``lora`` handlers) places the adapter on ``replicas`` pods
of the base and loads it through vLLM's ``/v1/load_lora_adapter``; the gateway then routes requests naming the
adapter to those pods. Sources are restricted to forms vLLM can be handed (``lora_manager.sources`` and
docs/lora.md say what each becomes), so a typo is rejected by the API server instead of failing on a pod
minutes later:

- ``hf://org/repo`` — a Hugging Face Hub repo id (no ``@revision``: vLLM's load API cannot take one);
- ``file:///abs/path`` — a directory present in the engine image or a volume mounted into the engine pods;
- ``s3://bucket/key``, ``gs://bucket/key``, ``https://host/path`` — passed through for engine images that can
  fetch them (no ``http://``: adapters are code-adjacent, so TLS is required). Which https hosts are allowed is
  the chart's ValidatingAdmissionPolicy's call (loopback, link-local, metadata and cluster-internal addresses
  are refused unless allow-listed): the engine would fetch them from inside the cluster.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, JsonValue

from flotilla.crds._base import DNS_LABEL, ApiModel, Condition, OpaqueObject, condition_list

#: the URL schemes an adapter may come from (see the module docstring)
SOURCE_SCHEMES: tuple[str, ...] = ("hf", "s3", "gs", "https", "file")
SOURCE_RULE = "self.matches('^(" + "|".join(SOURCE_SCHEMES) + r")://[^\\s]+$')"
SOURCE_MESSAGE = "source must be a URL with one of the schemes " + ", ".join(
    f"{s}://" for s in SOURCE_SCHEMES
)
#: per-scheme shape rules (one message each, so the API server's answer names the actual problem)
SOURCE_SHAPE_RULES: tuple[JsonValue, ...] = (
    {
        "rule": r"!self.startsWith('hf://') || self.matches('^hf://[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$')",
        "message": "hf:// sources must be hf://<org>/<repo>: vLLM's load API takes a repo id and no revision",
    },
    {
        "rule": r"!self.startsWith('file://') || (self.startsWith('file:///') && !self.contains('/../') && !self.endsWith('/..'))",
        "message": "file:// sources must be an absolute path the engine pod sees (file:///dir), without '..'",
    },
    {
        "rule": r"!self.startsWith('https://') || !self.matches('^https://[^/]*@')",
        "message": "https:// sources must not carry credentials (user:password@): they would show in status and logs",
    },
)


class Placement(ApiModel):
    """How the LoRA manager picks pods for the adapter."""

    policy: Literal["LeastLoaded", "Packed", "Spread"] = Field(
        default="LeastLoaded",
        description="LeastLoaded: pods with the lowest summed adapter weight per LoRA slot (density); "
        "Packed: fill pods that already serve adapters first (keeps others free); Spread: across nodes first.",
    )
    weight: float = Field(
        default=1.0,
        gt=0,
        le=1_000_000,
        description="Relative traffic of this adapter (e.g. its requests/s); LeastLoaded keeps the summed "
        "weight per pod balanced, so two hot adapters do not share a pod while cold ones sit elsewhere.",
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
        description="Where the adapter weights are: hf://org/repo, file:///dir (as the engine pod sees it), "
        "s3://, gs:// or https:// (for engines that can fetch them).",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": SOURCE_RULE, "message": SOURCE_MESSAGE},
                *SOURCE_SHAPE_RULES,
            ]
        },
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
    phase: Literal["Pending", "Loading", "Ready", "Degraded", "Failed"] = Field(
        default="Pending",
        description="Pending: nothing loaded yet; Loading: loads under way; Ready: every desired replica "
        "loaded; Degraded: some loaded, a condition says why not all; Failed: none loaded, a condition says why.",
    )
    desired_replicas: int = Field(
        default=0,
        ge=0,
        description="Replicas the adapter should have now (spec.replicas or every ready pod).",
    )
    loaded_pods: list[str] = Field(
        default_factory=list, max_length=1000, description="Pods that serve the adapter."
    )
    ready_replicas: int = Field(default=0, ge=0, description="Number of pods serving the adapter.")
    target_pods: list[str] = Field(
        default_factory=list,
        max_length=1000,
        description="Pods the controller chose for the adapter, written before it loads there (loads may be "
        "in flight); a restarted controller continues from it instead of choosing again.",
    )
    observed_generation: int = Field(default=0, ge=0, description="Last reconciled .metadata.generation.")
    conditions: list[Condition] = condition_list()


class LoRAAdapter(ApiModel):
    """A LoRA adapter served on the pods of a ModelDeployment."""

    api_version: str = Field(default="flotilla.dev/v1alpha1", alias="apiVersion")
    kind: str = "LoRAAdapter"
    metadata: OpaqueObject = Field(default_factory=dict)
    spec: LoRAAdapterSpec
    status: LoRAAdapterStatus = Field(default_factory=LoRAAdapterStatus)
