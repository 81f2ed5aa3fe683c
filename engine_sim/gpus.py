"""Latency presets for the common serving GPUs, derived by one roofline formula from published specifications.

The GPU optimizer (``optimizer/``, Mélange) needs GPU types whose *ratios* are right: a cheap L4 that is
memory-starved but good enough for short requests at low rates, an H100 that is expensive but fast. Each preset
here is derived from four datasheet numbers — peak dense BF16 tensor TFLOPs, memory bandwidth, memory size and
vLLM's batch defaults for that memory class — and the model's shape (Llama-3-8B, reference/simulator.md §1):

* weight-read floor per step  ``T_w = weights / (η_mem · BW)``            (memory-bound decode)
* saturated prefill           ``tokens/s = η_flop · F / (2 · params)``    (compute-bound large steps)
* KV read per context token   ``kv_bytes_per_token / (η_mem · BW)``       (decode attention)
* prefill attention per pair  ``4 · layers · heads · head_dim / (η_flop · F)``
* KV blocks                   ``(0.9 · memory − weights − reserve) / (block_size · kv_bytes_per_token)``

The two efficiencies are the ones the hand-made presets imply: the Vidur-profiled A100 reads weights at ~0.8 of
peak bandwidth (9.7 ms for 16 GB at 2.04 TB/s) and prefills at ~0.7–0.77 of peak FLOPs (15k tok/s × 16 GFLOP).
One formula for all six GPUs keeps their ratios comparable; the hand-made ``a100-llama3-8b`` and
``h100-llama3-8b`` presets stay as they were (a unit test checks that the derived A100-80GB agrees with the
Vidur one within 15 % on decode and prefill steps).

Sources (datasheets, read 2025): NVIDIA L4 (121 TFLOPs BF16 dense, 300 GB/s, 24 GB), NVIDIA A10 and AWS's
A10G variant (600 GB/s, 24 GB; the A10G has ~70 dense BF16 tensor TFLOPs against the A10's 125, per Baseten's
"NVIDIA A10 vs A10G"), NVIDIA L40S (362 dense, 864 GB/s, 48 GB), NVIDIA A100 SXM (312 dense; 40 GB at
1,555 GB/s, 80 GB at 2,039 GB/s), NVIDIA H100 SXM (989 dense, 3.35 TB/s, 80 GB). Prices: docs/optimizer.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine_sim.profile import LatencyProfile

GIB = 1024**3


@dataclass(frozen=True)
class ModelShape:
    """What the roofline needs from a model's config.json (dense decoder, BF16 weights)."""

    name: str
    params: float
    layers: int
    heads: int
    kv_heads: int
    head_dim: int

    @property
    def weight_bytes(self) -> float:
        return 2.0 * self.params

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * 2  # K and V, BF16


LLAMA3_8B = ModelShape("llama3-8b", params=8.03e9, layers=32, heads=32, kv_heads=8, head_dim=128)


@dataclass(frozen=True)
class GpuSpec:
    """Datasheet numbers of one GPU type (dense BF16 tensor TFLOPs, not the 2:4-sparsity figure)."""

    name: str
    bf16_tflops: float
    bandwidth_gbs: float
    memory_gib: float
    #: vLLM's OpenAI-server batch defaults for this memory class (simulator.md §2)
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048


GPUS: tuple[GpuSpec, ...] = (
    GpuSpec("l4", bf16_tflops=121.0, bandwidth_gbs=300.0, memory_gib=24.0),
    GpuSpec("a10g", bf16_tflops=70.0, bandwidth_gbs=600.0, memory_gib=24.0),
    GpuSpec("l40s", bf16_tflops=362.0, bandwidth_gbs=864.0, memory_gib=48.0),
    GpuSpec("a100-40gb", bf16_tflops=312.0, bandwidth_gbs=1555.0, memory_gib=40.0),
    GpuSpec("a100-80gb", bf16_tflops=312.0, bandwidth_gbs=2039.0, memory_gib=80.0),
    # >= 70 GiB and not an A100: vLLM gives it the large batch defaults
    GpuSpec(
        "h100-80gb",
        bf16_tflops=989.0,
        bandwidth_gbs=3350.0,
        memory_gib=80.0,
        max_num_seqs=1024,
        max_num_batched_tokens=8192,
    ),
)

#: fraction of peak bandwidth / FLOPs reached (from the Vidur-profiled A100, see the module docstring)
MEMORY_EFFICIENCY = 0.8
FLOP_EFFICIENCY = 0.7
#: vLLM's --gpu-memory-utilization default
GPU_MEMORY_UTILIZATION = 0.9
#: activations, CUDA graphs and the allocator's slack, kept out of the KV cache (simulator.md §2: ~2 GiB)
RESERVE_GIB = 2.0
CPU_OVERHEAD = 0.002


@dataclass(frozen=True)
class DerivedPreset:
    """A latency profile plus the capacity the GPU's memory gives the model."""

    gpu: GpuSpec
    profile: LatencyProfile
    num_gpu_blocks: int


def derive(gpu: GpuSpec, model: ModelShape = LLAMA3_8B, block_size: int = 16) -> DerivedPreset:
    bw = MEMORY_EFFICIENCY * gpu.bandwidth_gbs * 1e9
    flops = FLOP_EFFICIENCY * gpu.bf16_tflops * 1e12
    kv_budget = GPU_MEMORY_UTILIZATION * gpu.memory_gib * GIB - model.weight_bytes - RESERVE_GIB * GIB
    blocks = int(kv_budget // (block_size * model.kv_bytes_per_token)) + 1  # + vLLM's null block
    if blocks < 2:
        raise ValueError(f"{model.name} does not fit on {gpu.name}")
    profile = LatencyProfile(
        name=f"{gpu.name}-{model.name}",
        cpu_overhead=CPU_OVERHEAD,
        linear_points=((1, model.weight_bytes / bw),),
        prefill_tokens_per_s=flops / (2.0 * model.params),
        lm_head=0.0,  # the lm_head's weights are part of the weight read above
        kv_read_per_token=model.kv_bytes_per_token / bw,
        attn_per_pair=4.0 * model.layers * model.heads * model.head_dim / flops,
    )
    return DerivedPreset(gpu, profile, blocks)


DERIVED: dict[str, DerivedPreset] = {d.profile.name: d for d in (derive(g) for g in GPUS)}
