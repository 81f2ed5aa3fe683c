"""Engine configuration and the named latency presets.

One :class:`EngineConfig` describes one simulated vLLM server. Defaults follow vLLM's own for the A100-class
OpenAI server (``max_num_seqs`` 256, ``max_num_batched_tokens`` 2048, block size 16, prefix caching on), so a
simulated pod behaves like a real one unless a test deliberately shrinks it (a tiny ``num_gpu_blocks`` is how
tests provoke eviction and preemption).

Latency presets are roofline profiles derived in ``reference/simulator.md`` §3. They are *derived*, not measured
on hardware: results built on them are shapes and ratios, not absolute promises.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine_sim.gpus import DERIVED
from engine_sim.profile import LatencyProfile

DEFAULT_MODEL = "meta-llama/Llama-3.1-8B-Instruct"


A100_LLAMA3_8B = LatencyProfile(
    name="a100-llama3-8b",
    cpu_overhead=0.003,
    # microsoft/vidur A100 mlp.csv sums: 9.7 ms flat to 16, then 10.9 / 11.2 / 13.2 / 19.5 ms (simulator.md §3)
    linear_points=((16, 0.0097), (32, 0.0109), (64, 0.0112), (128, 0.0132), (256, 0.0195)),
    prefill_tokens_per_s=15_000.0,
    lm_head=0.0005,
    kv_read_per_token=80e-9,
    # +13 % attention on an 8k prefill (~0.55 s): 71 ms over 8192^2/2 pairs ~= 2.1 ns per pair
    attn_per_pair=2.1e-9,
)

H100_LLAMA3_8B = LatencyProfile(
    name="h100-llama3-8b",
    cpu_overhead=0.002,
    # memory-bound at ~6 ms while B <= 128, 7 ms at 256 (derived: weights / (0.8 x 3.35 TB/s))
    linear_points=((128, 0.0060), (256, 0.0070)),
    prefill_tokens_per_s=38_000.0,
    lm_head=0.0003,
    kv_read_per_token=49e-9,
    attn_per_pair=0.8e-9,
)

ZERO = LatencyProfile(
    name="zero",
    cpu_overhead=0.0,
    linear_points=((1, 0.0),),
    prefill_tokens_per_s=1e18,
    lm_head=0.0,
    kv_read_per_token=0.0,
    attn_per_pair=0.0,
)

#: named presets (one explicit registry): the hand-made ones, then one per GPU type derived from its datasheet
PRESETS: dict[str, LatencyProfile] = {
    p.name: p for p in (A100_LLAMA3_8B, H100_LLAMA3_8B, ZERO, *(d.profile for d in DERIVED.values()))
}

#: vLLM's capacity defaults per GPU class (simulator.md §2): H100-class gets the larger batch
PRESET_CAPACITY: dict[str, tuple[int, int]] = {
    "a100-llama3-8b": (256, 2048),
    "h100-llama3-8b": (1024, 8192),
    "zero": (256, 2048),
    **{n: (d.gpu.max_num_seqs, d.gpu.max_num_batched_tokens) for n, d in DERIVED.items()},
}

#: KV blocks when ``num_gpu_blocks`` is not given: ~28k for an 8B model on 80 GB, else what the GPU's memory holds
DEFAULT_GPU_BLOCKS = 27_000
PRESET_BLOCKS: dict[str, int] = {n: d.num_gpu_blocks for n, d in DERIVED.items()}


class Faults(BaseModel):
    """Fault injection for reliability tests; all rates are probabilities in [0, 1]."""

    model_config = ConfigDict(extra="forbid")

    #: fraction of generate requests answered with HTTP 500 before they reach the engine
    failure_rate: float = Field(default=0.0, ge=0, le=1)
    #: fraction of engine steps that take ``latency_spike_factor`` times longer (GC pauses, noisy neighbours)
    latency_spike_rate: float = Field(default=0.0, ge=0, le=1)
    latency_spike_factor: float = Field(default=10.0, ge=1)
    #: fraction of streaming requests whose connection is cut after the first content chunk
    die_mid_stream_rate: float = Field(default=0.0, ge=0, le=1)
    #: when true, /health answers 500 and generate requests fail with 500 (a dead engine that still listens)
    dead: bool = False


class EngineConfig(BaseModel):
    """Everything one simulated engine needs; built by the CLI or by tests and ``flotilla up``."""

    model_config = ConfigDict(extra="forbid")

    model: str = DEFAULT_MODEL
    #: served name (first ``--served-model-name``); defaults to ``model``
    served_model_name: str | None = None
    preset: str = "a100-llama3-8b"
    #: multiply every simulated duration by this in wall-clock time (< 1 runs faster than real time)
    time_scale: float = Field(default=1.0, gt=0)
    seed: int = 0
    #: engine index, used for the ``engine`` metric label and the data-parallel rank in KV events
    engine_index: int = 0
    #: HTTP port this engine serves on (part of the KV-event topic)
    port: int = 8000
    host: str = "127.0.0.1"

    block_size: int = Field(default=16, ge=1, le=256)
    #: KV blocks (including vLLM's reserved null block); default: the preset's (~28k on an 80 GB GPU for an 8B
    #: model; the GPU-derived presets hold what their memory holds), see :attr:`gpu_blocks`
    num_gpu_blocks: int | None = Field(default=None, ge=2)
    max_num_seqs: int | None = Field(default=None, ge=1)
    max_num_batched_tokens: int | None = Field(default=None, ge=1)
    max_model_len: int = Field(default=131_072, ge=2)
    enable_prefix_caching: bool = True
    #: vLLM ``--scheduling-policy``: ``fcfs`` or ``priority`` (requests carry ``priority``, lower first)
    scheduling_policy: Literal["fcfs", "priority"] = "fcfs"
    #: report ``usage.prompt_tokens_details.cached_tokens`` (vLLM: ``--enable-prompt-tokens-details``)
    enable_prompt_tokens_details: bool = True

    #: natural output length (tokens before EOS when ``ignore_eos`` is false) is seeded uniform in this range
    output_len_min: int = Field(default=8, ge=1)
    output_len_max: int = Field(default=256, ge=1)

    #: a model directory or tokenizer.json (flotilla.hf_tokenizer); None = Flotilla's synthetic tokenizer
    tokenizer: str | None = None
    #: as vLLM's --chat-template: a file or the template itself, instead of the tokenizer directory's
    chat_template: str | None = None

    kv_events: bool = False
    #: ZMQ PUB endpoint; binds when it contains ``*`` or is a concrete loopback address of ours
    kv_events_endpoint: str | None = None
    kv_events_replay_endpoint: str | None = None
    kv_events_topic: str | None = None
    kv_events_format: Literal["map", "array"] = "map"
    kv_events_buffer_steps: int = Field(default=10_000, ge=1)

    enable_lora: bool = False
    max_loras: int = Field(default=1, ge=1)
    max_cpu_loras: int | None = Field(default=None, ge=1)
    #: seconds (simulated) to load an adapter
    lora_load_latency: float = Field(default=0.5, ge=0)
    #: extra step time when any adapter is in the batch, as a fraction (punica kernels; no verified figure)
    lora_step_overhead: float = Field(default=0.1, ge=0)
    #: adapters loaded at start, name -> path (vLLM ``--lora-modules name=path``)
    lora_modules: dict[str, str] = Field(default_factory=dict)

    #: seconds (simulated) before /health turns 200 (cold start); requests get 503 meanwhile
    startup_delay: float = Field(default=0.0, ge=0)
    #: simulated seconds to wake from sleep level 1 (level 2: five times this); unverified, a knob
    wake_up_latency: float = Field(default=1.0, ge=0)
    faults: Faults = Field(default_factory=Faults)

    @model_validator(mode="after")
    def _check(self) -> EngineConfig:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        if self.output_len_min > self.output_len_max:
            raise ValueError("output_len_min must be <= output_len_max")
        return self

    @property
    def name(self) -> str:
        return self.served_model_name or self.model

    @property
    def profile(self) -> LatencyProfile:
        return PRESETS[self.preset]

    @property
    def gpu_blocks(self) -> int:
        return self.num_gpu_blocks or PRESET_BLOCKS.get(self.preset, DEFAULT_GPU_BLOCKS)

    @property
    def seqs_limit(self) -> int:
        return self.max_num_seqs or PRESET_CAPACITY[self.preset][0]

    @property
    def token_budget(self) -> int:
        budget = self.max_num_batched_tokens or PRESET_CAPACITY[self.preset][1]
        return min(budget, self.seqs_limit * self.max_model_len)

    @property
    def topic(self) -> str:
        return self.kv_events_topic or f"kv@{self.host}:{self.port}@{self.name}"
