"""LoRA manager: decides which engine pods hold which adapters and loads them through vLLM's runtime API.

* ``placement`` — the pure decision (pods, wishes, what is loaded → target assignment and actions);
* ``engine`` — an idempotent, retrying client for ``/v1/load_lora_adapter``, ``/v1/unload_lora_adapter``
  and ``/v1/models``;
* ``converging`` — one observe → plan → act pass for one base model, used by the operator's controller and by
  ``flotilla up --lora``;
* ``sources`` — how an adapter source URL reaches the engine (``lora_path``).

Nothing here knows about Kubernetes: the operator feeds pods and adapters in and writes status out.
"""

from lora_manager.converging import Action, EnginePod, Outcome, Wanted, converge
from lora_manager.engine import EngineClient, Retry
from lora_manager.errors import (
    EngineError,
    EngineRejected,
    EngineUnavailable,
    LoraDisabled,
    LoraError,
    SourceRefused,
)
from lora_manager.placement import POLICIES, Adapter, Plan, Pod, Policy, place
from lora_manager.sources import engine_path

__all__ = [
    "POLICIES",
    "Action",
    "Adapter",
    "EngineClient",
    "EngineError",
    "EnginePod",
    "EngineRejected",
    "EngineUnavailable",
    "LoraDisabled",
    "LoraError",
    "Outcome",
    "Plan",
    "Pod",
    "Policy",
    "Retry",
    "SourceRefused",
    "Wanted",
    "converge",
    "engine_path",
    "place",
]
