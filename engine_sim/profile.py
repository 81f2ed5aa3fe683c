"""The parameters of the step-time model (:mod:`engine_sim.latency`), shared by the hand-made presets
(:mod:`engine_sim.config`) and the ones derived from GPU datasheets (:mod:`engine_sim.gpus`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class LatencyProfile(BaseModel):
    """Parameters of the step-time model in :mod:`engine_sim.latency` (all times in seconds)."""

    model_config = ConfigDict(frozen=True)

    name: str
    #: scheduler/CPU overhead per engine step
    cpu_overhead: float = Field(ge=0)
    #: linear-layer time at N tokens in the step, as (N, seconds) points; interpolated, flat below the first
    linear_points: tuple[tuple[int, float], ...]
    #: saturated prefill throughput of the linear layers (tokens/s); the compute-bound roof for large N
    prefill_tokens_per_s: float = Field(gt=0)
    #: lm_head + sampling per step
    lm_head: float = Field(ge=0)
    #: KV-cache read time per context token per step (memory-bound attention for decode)
    kv_read_per_token: float = Field(ge=0)
    #: prefill attention cost per (query token x context token) pair: quadratic in prompt length
    attn_per_pair: float = Field(ge=0)
