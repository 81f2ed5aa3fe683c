"""Flotilla's Kubernetes API (group ``flotilla.dev``, version ``v1alpha1``): models and generated CRDs."""

from __future__ import annotations

from flotilla.crds._base import API_VERSION, GROUP, VERSION, Condition
from flotilla.crds.crd import RESOURCES, Resource, crd, file_name, manifests, render
from flotilla.crds.loraadapter import SOURCE_SCHEMES, LoRAAdapter, LoRAAdapterSpec, LoRAAdapterStatus
from flotilla.crds.modelautoscaler import ModelAutoscaler, ModelAutoscalerSpec, ModelAutoscalerStatus
from flotilla.crds.modeldeployment import (
    DEFAULT_IMAGE,
    SIMULATOR_PRESETS,
    EngineSpec,
    KVEventsSpec,
    LoRASpec,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    PodTemplateOverride,
    Probes,
    ResourcesSpec,
    SimulatorSpec,
)
from flotilla.crds.modelgroup import GroupMember, ModelGroup, ModelGroupSpec, ModelGroupStatus

__all__ = [
    "API_VERSION",
    "DEFAULT_IMAGE",
    "GROUP",
    "RESOURCES",
    "SIMULATOR_PRESETS",
    "SOURCE_SCHEMES",
    "VERSION",
    "Condition",
    "EngineSpec",
    "GroupMember",
    "KVEventsSpec",
    "LoRAAdapter",
    "LoRAAdapterSpec",
    "LoRAAdapterStatus",
    "LoRASpec",
    "ModelAutoscaler",
    "ModelAutoscalerSpec",
    "ModelAutoscalerStatus",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "ModelGroup",
    "ModelGroupSpec",
    "ModelGroupStatus",
    "PodTemplateOverride",
    "Probes",
    "Resource",
    "ResourcesSpec",
    "SimulatorSpec",
    "crd",
    "file_name",
    "manifests",
    "render",
]
