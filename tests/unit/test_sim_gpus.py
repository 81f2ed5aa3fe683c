"""The GPU presets derived from datasheets: ordering between GPU types, KV capacity, agreement with Vidur's A100."""

from __future__ import annotations

import pytest

from engine_sim.config import PRESETS, EngineConfig
from engine_sim.gpus import DERIVED, GPUS, LLAMA3_8B, GpuSpec, derive
from engine_sim.latency import LatencyModel, StepShape

DECODE = StepShape(decode_tokens=1, context_tokens=300)
BATCH = StepShape(decode_tokens=64, context_tokens=64 * 1000)
PREFILL = StepShape(prefill_tokens=2048, context_tokens=2048, attention_pairs=2048 * 1024)


def step(preset: str, shape: StepShape) -> float:
    return LatencyModel(PRESETS[preset]).step_time(shape)


def test_every_gpu_has_a_preset_and_the_hand_made_ones_are_untouched() -> None:
    for gpu in GPUS:
        assert f"{gpu.name}-llama3-8b" in PRESETS
    assert PRESETS["a100-llama3-8b"].prefill_tokens_per_s == 15_000.0
    assert PRESETS["h100-llama3-8b"].prefill_tokens_per_s == 38_000.0
    assert EngineConfig(preset="a100-llama3-8b").gpu_blocks == 27_000


@pytest.mark.parametrize("shape", [DECODE, BATCH], ids=["decode-1", "decode-64"])
def test_decode_follows_memory_bandwidth(shape: StepShape) -> None:
    order = ["l4", "a10g", "l40s", "a100-40gb", "a100-80gb", "h100-80gb"]
    times = [step(f"{g}-llama3-8b", shape) for g in order]
    assert times == sorted(times, reverse=True)


def test_prefill_follows_tensor_flops() -> None:
    # the A10G has half the L4's tensor FLOPs but twice its bandwidth: slower prefill, faster decode
    assert step("a10g-llama3-8b", PREFILL) > step("l4-llama3-8b", PREFILL)
    assert step("a10g-llama3-8b", DECODE) < step("l4-llama3-8b", DECODE)
    assert step("l40s-llama3-8b", PREFILL) < step("a100-80gb-llama3-8b", PREFILL)


def test_kv_capacity_follows_memory() -> None:
    blocks = {d.gpu.name: d.num_gpu_blocks for d in DERIVED.values()}
    assert blocks["l4"] == blocks["a10g"] < blocks["a100-40gb"] < blocks["l40s"] < blocks["a100-80gb"]
    # 80 GB for an 8B model: ~27-28k blocks (simulator.md §2)
    assert 26_000 < blocks["a100-80gb"] < 29_000
    # 24 GB: 21.6 GiB usable - 15 GiB weights - 2 GiB reserve ~ 4.6 GiB of 2 MiB blocks
    assert 2_000 < blocks["l4"] < 2_600
    assert EngineConfig(preset="l4-llama3-8b").gpu_blocks == blocks["l4"]
    assert EngineConfig(preset="l4-llama3-8b", num_gpu_blocks=100).gpu_blocks == 100


@pytest.mark.parametrize("shape", [DECODE, BATCH, PREFILL], ids=["decode-1", "decode-64", "prefill-2k"])
def test_derived_a100_agrees_with_the_vidur_profile(shape: StepShape) -> None:
    assert step("a100-80gb-llama3-8b", shape) == pytest.approx(step("a100-llama3-8b", shape), rel=0.15)


def test_a_model_that_does_not_fit_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        derive(GpuSpec("tiny", bf16_tflops=10.0, bandwidth_gbs=100.0, memory_gib=16.0), LLAMA3_8B)
