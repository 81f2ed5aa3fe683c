"""The label and annotation contract between the operator and everything that finds engine pods.

The operator writes these on every engine pod; the gateway, autoscaler and LoRA manager select and read pods
by them. Keeping the names in one module means a rename is one edit and a typo is an import error.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "flotilla.dev"

#: served model name of the base model the pod runs (label values must be <= 63 chars: see ``label_value``)
MODEL: Final = f"{GROUP}/model"
#: name of the owning ModelDeployment
DEPLOYMENT: Final = f"{GROUP}/deployment"
#: role of the pod in the fleet; engine pods carry ``engine``
COMPONENT: Final = f"{GROUP}/component"
COMPONENT_ENGINE: Final = "engine"
#: gateway pods carry ``gateway`` (the autoscaler reads per-model demand from their /metrics)
COMPONENT_GATEWAY: Final = "gateway"
#: operator pods carry ``operator`` (engines' NetworkPolicy admits them: LoRA loading, metrics for autoscaling)
COMPONENT_OPERATOR: Final = "operator"
#: "true" when the engine publishes vLLM KV-cache events
KV_EVENTS: Final = f"{GROUP}/kv-events"
#: "true" when the engine accepts runtime LoRA loading
LORA_ENABLED: Final = f"{GROUP}/lora-enabled"
#: the GPU type the pod runs on (ModelDeployment ``spec.gpuType``): a ModelGroup's plan routes by it
GPU_TYPE: Final = f"{GROUP}/gpu-type"

#: annotations (values that are not selectors)
ENGINE_PORT: Final = f"{GROUP}/engine-port"
KV_EVENTS_PORT: Final = f"{GROUP}/kv-events-port"
SERVED_MODEL_NAME: Final = f"{GROUP}/served-model-name"
ROUTING_PROFILE: Final = f"{GROUP}/routing-profile"

MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE: Final = "flotilla"

DEFAULT_ENGINE_PORT: Final = 8000
DEFAULT_KV_EVENTS_PORT: Final = 5557

# Request headers shared by gateway and clients.
HEADER_ROUTING_STRATEGY: Final = "x-routing-strategy"
HEADER_SESSION_ID: Final = "x-session-id"
HEADER_REQUEST_ID: Final = "x-request-id"
#: response header naming the engine that served a request (only with the gateway's ``debug_headers``)
HEADER_ENDPOINT: Final = "x-flotilla-endpoint"


def label_value(value: str) -> str:
    """A Kubernetes-valid label value for ``value`` (model names like ``org/model`` contain ``/``).

    Slashes and other characters outside ``[A-Za-z0-9._-]`` become ``.``; the result is cut to 63 characters
    and trimmed of non-alphanumeric ends, as the API server requires.
    """
    out = "".join(c if c.isalnum() or c in "._-" else "." for c in value)[:63]
    return out.strip("._-")
