"""``gpu-plan`` filter: send each request size to the GPU type the model's ModelGroup plan assigned it.

For a model with a plan (:mod:`gateway.routing.plans`): the request's bucket — prompt tokens × ``max_tokens``
— picks a GPU type by smooth weighted round-robin over the plan's shares, among the types that have a
usable endpoint here; the filter keeps that type's endpoints (pod label ``flotilla.dev/gpu-type``). An
endpoint is *usable* unless it is saturated: its engine reports at least ``max_waiting`` queued requests
(vLLM queues only once its batch or KV cache is full). When no planned type has a usable endpoint (a type
still scaling up from zero, every pod of it saturated), the filter returns nothing and the router keeps
every candidate: the fallback is "any type with capacity", never a refusal. Models without a plan, and
LoRA adapters (planned under their base model's name only), pass through untouched.

Parameters: ``max_waiting`` (default 4): queued requests at which an endpoint counts as saturated.
"""

from __future__ import annotations

from gateway.endpoints import Endpoint
from gateway.routing.plans import RoutingPlans
from gateway.routing.types import RoutingRequest


def saturated(endpoint: Endpoint, max_waiting: float) -> bool:
    return endpoint.metrics is not None and endpoint.metrics.waiting >= max_waiting


class GpuPlan:
    name = "gpu-plan"

    def __init__(self, plans: RoutingPlans, max_waiting: float = 4.0) -> None:
        self.plans = plans
        self.max_waiting = max_waiting

    def filter(self, request: RoutingRequest, endpoints: list[Endpoint]) -> list[Endpoint]:
        if self.plans.get(request.model) is None:
            return endpoints
        usable = [e for e in endpoints if e.spec.gpu_type and not saturated(e, self.max_waiting)]
        types = {t for e in usable if (t := e.spec.gpu_type)}
        gpu = self.plans.choose(request.model, request.prompt_tokens, request.max_tokens, types)
        return [e for e in usable if e.spec.gpu_type == gpu] if gpu is not None else []
