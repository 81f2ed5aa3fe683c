"""``ModelDeployment`` (short name ``md``): one model served by a fleet of vLLM-compatible engine pods.

The operator turns it into a Deployment and a Service; the gateway finds the pods by the labels in
``flotilla.labels``. ``spec.replicas`` is also reachable through the ``/scale`` subresource, which is what
``kubectl scale`` and the ModelAutoscaler write.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import ConfigDict, Field

from flotilla import labels
from flotilla.crds._base import DNS_LABEL, ApiModel, Condition, OpaqueObject, Quantity, condition_list

DEFAULT_IMAGE = "vllm/vllm-openai:v0.11.0"
#: latency presets of ``engine_sim`` (``engine_sim.config.PRESETS``; a unit test keeps the two in step)
SimulatorPreset = Literal[
    "a100-llama3-8b", "h100-llama3-8b", "zero",
    # one per serving GPU type, derived from its datasheet (engine_sim/gpus.py; docs/optimizer.md)
    "l4-llama3-8b", "a10g-llama3-8b", "l40s-llama3-8b", "a100-40gb-llama3-8b", "a100-80gb-llama3-8b",
    "h100-80gb-llama3-8b",
]  # fmt: skip
SIMULATOR_PRESETS: tuple[str, ...] = get_args(SimulatorPreset)


class Probes(ApiModel):
    """Health checking of the engine's ``GET /health`` (vLLM answers 200 once the model is loaded)."""

    path: str = Field(default="/health", description="HTTP path probed for liveness and readiness.")
    startup_timeout_seconds: int = Field(
        default=1800,
        ge=10,
        le=7200,
        description="How long a starting engine may take to load weights before it is restarted "
        "(vLLM cold starts take minutes).",
    )
    period_seconds: int = Field(default=10, ge=1, le=300, description="Probe period once started.")
    timeout_seconds: int = Field(default=5, ge=1, le=60, description="Timeout of one probe.")
    failure_threshold: int = Field(
        default=3, ge=1, le=30, description="Consecutive failures before the pod is unready / restarted."
    )


class SimulatorSpec(ApiModel):
    """Knobs of the simulated engine (``engine.type: simulator``); ignored for vLLM."""

    preset: SimulatorPreset = Field(
        default="a100-llama3-8b",
        description="Latency profile of the simulated GPU (zero = instant, for functional tests).",
    )
    startup_delay_seconds: float = Field(
        default=0.0, ge=0, le=3600, description="Simulated cold start before /health turns 200."
    )
    kv_cache_blocks: int | None = Field(
        default=None,
        ge=2,
        le=10_000_000,
        description="KV-cache blocks per engine (vLLM derives them from GPU memory); unset = 27000, an 80 GB "
        "GPU serving an 8B model.",
    )


class EngineSpec(ApiModel):
    """The engine container: a vLLM OpenAI server (or anything speaking its HTTP interface)."""

    type: Literal["vllm", "simulator"] = Field(
        default="vllm",
        description="vllm runs the vLLM image; simulator runs Flotilla's GPU-free vLLM simulator (`flotilla "
        "sim serve`, same arguments as vLLM) from the operator's simulator image. Simulated engines use no "
        "GPU: set resources.gpus to 0.",
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        description=f"Container image of the engine; unset = {DEFAULT_IMAGE} for vllm, the operator's "
        "--simulator-image for simulator.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="Image pull policy of the engine container."
    )
    port: int = Field(
        default=labels.DEFAULT_ENGINE_PORT,
        ge=1,
        le=65535,
        description="Port of the OpenAI-compatible API, /health and /metrics.",
    )
    block_size: Literal[1, 8, 16, 32, 64, 128] = Field(
        default=16,
        description="KV-cache block size in tokens (--block-size); the gateway's prefix index uses the same.",
    )
    max_model_len: int | None = Field(
        default=None, ge=1, description="Context length limit (--max-model-len); unset = the model's own."
    )
    tensor_parallel_size: int = Field(
        default=1, ge=1, le=64, description="GPUs one engine shards the model over (--tensor-parallel-size)."
    )
    args: list[str] = Field(
        default_factory=list,
        max_length=128,
        description="Extra engine arguments appended after the ones Flotilla derives from this spec.",
    )
    env: list[OpaqueObject] = Field(
        default_factory=list,
        max_length=128,
        description="Extra environment variables (Kubernetes EnvVar objects) of the engine container.",
    )
    probes: Probes = Field(default_factory=Probes, description="Health checking of the engine.")
    simulator: SimulatorSpec = Field(
        default_factory=SimulatorSpec, description="Simulator settings (engine.type simulator only)."
    )


class ResourcesSpec(ApiModel):
    """Compute for each engine pod and where it may run."""

    gpus: int = Field(
        default=1, ge=0, le=16, description="nvidia.com/gpu per pod (0 for CPU-only or simulated engines)."
    )
    cpu: Quantity | None = Field(default=None, description="CPU request and limit per pod, e.g. 8 or 500m.")
    memory: Quantity | None = Field(default=None, description="Memory request and limit per pod, e.g. 32Gi.")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the pods must match (e.g. a GPU product)."
    )
    tolerations: list[OpaqueObject] = Field(
        default_factory=list, max_length=32, description="Tolerations (Kubernetes Toleration objects)."
    )


class LoRASpec(ApiModel):
    """Runtime LoRA adapter loading (--enable-lora); LoRAAdapter objects are placed onto these pods."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.maxCpuLoras) || self.maxCpuLoras >= self.maxLoras",
                    "message": "lora.maxCpuLoras must be >= lora.maxLoras",
                }
            ]
        }
    )

    enabled: bool = Field(default=False, description="Serve LoRA adapters next to the base model.")
    max_loras: int = Field(default=4, ge=1, le=256, description="Adapters resident on the GPU at once.")
    max_lora_rank: Literal[8, 16, 32, 64, 128, 256, 320, 512] = Field(
        default=16, description="Largest adapter rank accepted (--max-lora-rank)."
    )
    max_cpu_loras: int | None = Field(
        default=None, ge=1, le=4096, description="Adapters cached in CPU memory (--max-cpu-loras)."
    )


class KVEventsSpec(ApiModel):
    """vLLM KV-cache events over ZMQ, which make the gateway's prefix index precise instead of learned."""

    enabled: bool = Field(default=False, description="Publish KV-cache events (--kv-events-config).")
    port: int = Field(
        default=labels.DEFAULT_KV_EVENTS_PORT, ge=1, le=65535, description="ZMQ PUB port on each pod."
    )
    topic: str = Field(default="kv-events", max_length=253, description="ZMQ topic of the events.")


class NetworkPolicySpec(ApiModel):
    """Who may reach the engine pods. vLLM's API (and, with LoRA, its runtime adapter API) has no auth of
    its own, so by default only Flotilla's gateway and operator pods may connect."""

    enabled: bool = Field(
        default=True,
        description="Create a NetworkPolicy admitting only pods labelled flotilla.dev/component=gateway or "
        "operator (any namespace) to the engine and KV-event ports.",
    )
    extra_ingress_from: list[OpaqueObject] = Field(
        default_factory=list,
        max_length=32,
        description="More allowed peers (Kubernetes NetworkPolicyPeer objects), e.g. your Prometheus.",
    )


class PodTemplateMetadata(ApiModel):
    labels: dict[str, str] = Field(default_factory=dict, description="Extra pod labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Extra pod annotations.")


class PodTemplateOverride(ApiModel):
    """Escape hatch: merged into the generated pod template (maps recursively, named lists by name)."""

    metadata: PodTemplateMetadata = Field(default_factory=PodTemplateMetadata)
    spec: OpaqueObject = Field(
        default_factory=dict,
        description="A partial PodSpec merged over the generated one; containers and volumes merge by name "
        "(the engine container is named 'engine').",
    )


class ModelDeploymentSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!self.kvEvents.enabled || self.kvEvents.port != self.engine.port",
                    "message": "kvEvents.port must differ from engine.port",
                },
                {
                    "rule": "self.resources.gpus == 0 || self.engine.tensorParallelSize <= self.resources.gpus",
                    "message": "engine.tensorParallelSize cannot exceed resources.gpus",
                },
                {
                    "rule": "self.engine.type != 'simulator' || self.resources.gpus == 0",
                    "message": "engine.type simulator uses no GPU: set resources.gpus to 0",
                },
            ]
        }
    )

    model: str = Field(
        min_length=1,
        max_length=512,
        description="Model to serve: a Hugging Face id (org/name) or a path inside the image (--model).",
    )
    served_model_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="Name clients use in the OpenAI 'model' field (--served-model-name); defaults to model.",
    )
    replicas: int = Field(default=1, ge=0, le=1000, description="Number of engine pods.")
    gpu_type: str | None = Field(
        default=None,
        max_length=63,
        pattern=DNS_LABEL,
        description="GPU type the pods run on (e.g. l4, a100-80gb; the names of the optimizer's profiles): "
        "the pod label flotilla.dev/gpu-type, by which a ModelGroup's plan routes request sizes.",
    )
    engine: EngineSpec = Field(default_factory=EngineSpec, description="The engine container.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Compute and placement.")
    lora: LoRASpec = Field(default_factory=LoRASpec, description="Runtime LoRA adapters.")
    kv_events: KVEventsSpec = Field(default_factory=KVEventsSpec, description="vLLM KV-cache events.")
    routing_profile: str | None = Field(
        default=None,
        max_length=63,
        pattern=DNS_LABEL,
        description="Gateway routing profile for this model (a profile name the gateway knows); unset = the "
        "gateway's default.",
    )
    network_policy: NetworkPolicySpec = Field(
        default_factory=NetworkPolicySpec, description="Ingress allowed to the engine pods."
    )
    pod_template: PodTemplateOverride = Field(
        default_factory=PodTemplateOverride, description="Overrides merged into the generated pod template."
    )

    @property
    def served_name(self) -> str:
        return self.served_model_name or self.model


class ModelDeploymentStatus(ApiModel):
    replicas: int = Field(default=0, ge=0, description="Engine pods that exist (the /scale status).")
    ready_replicas: int = Field(default=0, ge=0, description="Engine pods that pass readiness.")
    updated_replicas: int = Field(default=0, ge=0, description="Pods running the current template.")
    selector: str = Field(default="", description="Label selector of the engine pods (for /scale).")
    served_model_name: str = Field(default="", description="The model name the pods serve.")
    observed_generation: int = Field(
        default=0, ge=0, description="The .metadata.generation the operator last reconciled."
    )
    conditions: list[Condition] = condition_list()


class ModelDeployment(ApiModel):
    """A model served by a fleet of vLLM-compatible engine pods."""

    api_version: str = Field(default="flotilla.dev/v1alpha1", alias="apiVersion")
    kind: str = "ModelDeployment"
    metadata: OpaqueObject = Field(default_factory=dict)
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus = Field(default_factory=ModelDeploymentStatus)
