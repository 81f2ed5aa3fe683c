"""CustomResourceDefinitions for Flotilla's API, assembled from the models and rendered as YAML.

One ``Resource`` row per kind holds what the models cannot say: names, scope, printer columns and
subresources. ``ModelDeployment`` exposes ``/scale`` (spec.replicas, status.replicas, status.selector), so
``kubectl scale`` and the autoscaler work without knowing about Deployments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel

from flotilla.crds._base import GROUP, VERSION
from flotilla.crds.loraadapter import LoRAAdapterSpec, LoRAAdapterStatus
from flotilla.crds.modelautoscaler import ModelAutoscalerSpec, ModelAutoscalerStatus
from flotilla.crds.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from flotilla.crds.modelgroup import ModelGroupSpec, ModelGroupStatus
from flotilla.crds.schema import Schema, structural


@dataclass(frozen=True)
class Resource:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    description: str
    spec: type[BaseModel]
    status: type[BaseModel]
    columns: tuple[dict[str, Any], ...]
    scale: bool = False
    categories: tuple[str, ...] = field(default=("flotilla",))

    @property
    def name(self) -> str:
        return f"{self.plural}.{GROUP}"


def _col(
    name: str, path: str, type_: str = "string", priority: int = 0, description: str = ""
) -> dict[str, Any]:
    col: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path}
    if priority:
        col["priority"] = priority
    if description:
        col["description"] = description
    return col


_AGE = _col("Age", ".metadata.creationTimestamp", "date")

RESOURCES: tuple[Resource, ...] = (
    Resource(
        kind="ModelDeployment",
        plural="modeldeployments",
        short_names=("md",),
        description="A model served by a fleet of vLLM-compatible engine pods (Deployment + Service).",
        spec=ModelDeploymentSpec,
        status=ModelDeploymentStatus,
        columns=(
            _col("Model", ".spec.model", description="Model the engines load"),
            _col("Ready", ".status.readyReplicas", "integer", description="Engine pods passing readiness"),
            _col("Replicas", ".spec.replicas", "integer", description="Desired engine pods"),
            _col("Available", '.status.conditions[?(@.type=="Available")].status', priority=1),
            _col("Served", ".status.servedModelName", priority=1),
            _col("Engine", ".spec.engine.type", priority=1, description="vllm or simulator"),
            _AGE,
        ),
        scale=True,
    ),
    Resource(
        kind="LoRAAdapter",
        plural="loraadapters",
        short_names=("lora",),
        description="A LoRA adapter served on the pods of a ModelDeployment.",
        spec=LoRAAdapterSpec,
        status=LoRAAdapterStatus,
        columns=(
            _col("Model", ".spec.baseModelDeployment", description="ModelDeployment serving the adapter"),
            _col("Desired", ".status.desiredReplicas", "integer", description="Pods that should hold it"),
            _col("Ready", ".status.readyReplicas", "integer", description="Pods where it is loaded"),
            _col("Phase", ".status.phase"),
            _col("Pods", ".status.loadedPods", priority=1),
            _col("Source", ".spec.source", priority=1),
            _AGE,
        ),
    ),
    Resource(
        kind="ModelAutoscaler",
        plural="modelautoscalers",
        short_names=("mas",),
        description="Scales a ModelDeployment on engine metrics (KPA or APA).",
        spec=ModelAutoscalerSpec,
        status=ModelAutoscalerStatus,
        columns=(
            _col("Target", ".spec.scaleTargetRef.name"),
            _col("Min", ".spec.minReplicas", "integer"),
            _col("Max", ".spec.maxReplicas", "integer"),
            _col("Current", ".status.currentReplicas", "integer", description="Replicas of the target"),
            _col("Desired", ".status.desiredReplicas", "integer", description="Replicas last decided"),
            _col("Panic", ".status.panic", "boolean", priority=1),
            _col("Algorithm", ".spec.algorithm", priority=1),
            _AGE,
        ),
    ),
    Resource(
        kind="ModelGroup",
        plural="modelgroups",
        short_names=("mg",),
        description="One model served on several GPU types (one ModelDeployment each), sized and routed by "
        "the GPU optimizer at least cost within an SLO.",
        spec=ModelGroupSpec,
        status=ModelGroupStatus,
        columns=(
            _col("Model", ".spec.model"),
            _col("GPUs", ".status.gpus", description="Planned GPUs per type"),
            _col("Cost/h", ".status.costPerHour", "number", description="Dollars per hour of the plan"),
            _col("Planned", '.status.conditions[?(@.type=="Planned")].status'),
            _col("Rate", ".status.plan.rate", "number", priority=1, description="Observed requests/s"),
            _col("Reason", '.status.conditions[?(@.type=="Planned")].reason', priority=1),
            _AGE,
        ),
    ),
)


def openapi_schema(resource: Resource) -> Schema:
    spec = structural(resource.spec)
    spec = dict(sorted({**spec, "description": f"Desired state of the {resource.kind}."}.items()))
    status = structural(resource.status, keep_defaults=False)
    status = dict(
        sorted(
            {**status, "description": f"Observed state of the {resource.kind}, set by the operator."}.items()
        )
    )
    return {
        "type": "object",
        "description": resource.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "APIVersion of this object (flotilla.dev/v1alpha1).",
            },
            "kind": {"type": "string", "description": f"Kind of this object ({resource.kind})."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


def crd(resource: Resource) -> dict[str, Any]:
    subresources: dict[str, Any] = {"status": {}}
    if resource.scale:
        subresources["scale"] = {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": resource.name, "labels": {"app.kubernetes.io/part-of": "flotilla"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": resource.kind,
                "listKind": f"{resource.kind}List",
                "plural": resource.plural,
                "singular": resource.kind.lower(),
                "shortNames": list(resource.short_names),
                "categories": list(resource.categories),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema(resource)},
                    "subresources": subresources,
                    "additionalPrinterColumns": list(resource.columns),
                }
            ],
        },
    }


HEADER = "# Generated by `flotilla crds` from the pydantic models in flotilla/crds/. Do not edit; run `make crds`.\n"


def render(manifest: dict[str, Any]) -> str:
    """Stable YAML for one manifest (the drift test compares these bytes with the committed files)."""
    return HEADER + yaml.safe_dump(manifest, sort_keys=False, width=100, allow_unicode=True)


def file_name(manifest: dict[str, Any]) -> str:
    return f"{manifest['metadata']['name']}.yaml"


def manifests() -> list[dict[str, Any]]:
    return [crd(r) for r in RESOURCES]
