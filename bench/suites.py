"""The two suites: ``standard`` (about 10 minutes on a 2-core machine) and ``quick`` (under a minute).

Parameters are the public benchmarks' shapes (shared/reference/routing.md §4) scaled down. The standard suite
runs the simulated GPUs at twice real time (``time_scale`` 0.5) with doubled request rates: the same load in
simulated terms in half the wall time; latencies are reported in wall-clock seconds. The engines' KV
cache is deliberately small (``num_gpu_blocks``) so that the shared-context working sets exceed one engine's
cache but fit the cluster's, which is where cache-aware routing matters (llm-d ran at 73 % of cluster KV);
the report states working set ÷ cluster KV for every workload.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from bench.fleet import FleetSpec
from bench.results import SLO

#: every Flotilla strategy the gateway registers (names from gateway/strategies; "default" is the profile)
FLOTILLA_STRATEGIES = (
    "default",
    "default@precise",
    "prefix-cache",
    "precise-prefix",
    "least-request",
    "least-kv-usage",
    "power-of-two",
    "round-robin",
    "random",
    "session-affinity",
)
PEERS = ("sglang:cache_aware", "sglang:round_robin", "vllm-router:cache_aware", "vllm-router:kv_aware")


@dataclass(frozen=True)
class WorkloadRun:
    """One workload, its arrival rate and the contenders measured on it."""

    workload: str
    params: dict[str, Any]
    rate: float  # requests/s, Poisson
    contenders: tuple[str, ...]


@dataclass(frozen=True)
class OverheadSpec:
    """The gateway-overhead mode: zero-latency engines, so everything measured is the router's own cost."""

    engines: int = 2
    contenders: tuple[str, ...] = (
        "direct", "flotilla:default", "flotilla:round-robin", "sglang:cache_aware", "sglang:round_robin",
        "vllm-router:cache_aware", "vllm-router:round_robin",
    )  # fmt: skip
    latency_requests: int = 200  # sequential (concurrency 1)
    throughput_concurrency: int = 32
    throughput_seconds: float = 5.0
    stream_concurrency: int = 16
    stream_tokens: int = 128
    stream_seconds: float = 5.0
    prompt_tokens: int = 2048
    rounds: int = 4


@dataclass(frozen=True)
class Suite:
    name: str
    fleet: FleetSpec
    runs: tuple[WorkloadRun, ...]
    overhead: OverheadSpec | None
    slo: SLO = field(default_factory=SLO)
    drain_timeout: float = 10.0

    def with_filters(
        self, *, workloads: set[str] | None, contenders: set[str] | None, overhead: bool
    ) -> Suite:
        """A copy restricted to ``workloads`` / ``contenders`` (None = all)."""
        runs = tuple(
            replace(run, contenders=tuple(c for c in run.contenders if contenders is None or c in contenders))
            for run in self.runs
            if workloads is None or run.workload in workloads
        )
        over = self.overhead if overhead else None
        if over is not None and contenders is not None:
            over = replace(over, contenders=tuple(c for c in over.contenders if c in contenders))
        return replace(self, runs=runs, overhead=over)


def _all(*strategies: str) -> tuple[str, ...]:
    return ("direct", *(f"flotilla:{s}" for s in strategies), *PEERS)


def standard(seed: int) -> Suite:
    every = FLOTILLA_STRATEGIES
    some = ("default", "prefix-cache", "least-request", "round-robin", "session-affinity")
    control = ("default", "least-request", "round-robin")
    return Suite(
        name="standard",
        fleet=FleetSpec(engines=4, preset="a100-llama3-8b", seed=seed, num_gpu_blocks=1024, kv_events=True,
                        time_scale=0.5),
        runs=(
            WorkloadRun("gsp", {"groups": 16, "prompts_per_group": 8, "system_len": 2048,
                                "question_len": 128, "output_len": 32}, rate=60.0, contenders=_all(*every)),
            WorkloadRun("tenants", {"tenants": 12, "context_len": 4000, "requests": 128,
                                    "question_len": 64, "output_len": 32}, rate=40.0, contenders=_all(*every)),
            WorkloadRun("multiturn", {"users": 16, "rounds": 4, "system_len": 1000, "history_len": 2000,
                                      "question_len": 64, "answer_len": 48}, rate=16.0, contenders=_all(*some)),
            WorkloadRun("agentic", {"sessions": 12, "steps": 6, "toolsets": 4, "tools_len": 1500,
                                    "task_len": 200, "action_len": 32, "result_len": 256},
                        rate=20.0, contenders=_all(*some)),
            WorkloadRun("sharegpt", {"requests": 128, "input_median": 220, "output_median": 48,
                                     "max_output": 128}, rate=40.0, contenders=_all(*control)),
        ),
        overhead=OverheadSpec(),
    )  # fmt: skip


def quick(seed: int) -> Suite:
    return Suite(
        name="quick",
        fleet=FleetSpec(engines=2, preset="a100-llama3-8b", seed=seed, num_gpu_blocks=256, kv_events=True),
        runs=(
            WorkloadRun("gsp", {"groups": 4, "prompts_per_group": 6, "system_len": 1024,
                                "question_len": 64, "output_len": 16}, rate=8.0,
                        contenders=("direct", "flotilla:default", "flotilla:round-robin",
                                    "sglang:cache_aware", "vllm-router:cache_aware")),
        ),
        overhead=OverheadSpec(
            contenders=("direct", "flotilla:default", "sglang:round_robin"),
            latency_requests=30, throughput_concurrency=8, throughput_seconds=1.5,
            stream_concurrency=4, stream_tokens=32, stream_seconds=1.5, prompt_tokens=512, rounds=2,
        ),
        drain_timeout=15.0,
    )  # fmt: skip


SUITES = {"standard": standard, "quick": quick}
