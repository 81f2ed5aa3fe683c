from __future__ import annotations

from flotilla.vllm_metrics import EngineMetrics, LoraInfo
from gateway.endpoints import CircuitBreaker, Endpoint, EndpointSpec


def ep(
    port: int,
    *,
    in_flight: int = 0,
    active_blocks: int = 0,
    prefilling: int = 0,
    pending_blocks: int = 0,
    running: float = 0,
    waiting: float = 0,
    kv: float = 0.0,
    gpu_blocks: int | None = None,
    lora: LoraInfo | None = None,
    gpu_type: str | None = None,
) -> Endpoint:
    spec = EndpointSpec(url=f"http://127.0.0.1:{port}", model="m", gpu_type=gpu_type)
    e = Endpoint(spec=spec, breaker=CircuitBreaker(3, 5.0))
    e.healthy = True
    e.in_flight = in_flight
    e.active_blocks = active_blocks
    e.prefilling = prefilling
    e.pending_blocks = pending_blocks
    e.metrics = EngineMetrics(
        running=running, waiting=waiting, kv_usage=kv, num_gpu_blocks=gpu_blocks, lora=lora
    )
    return e
