"""The simulated fleet every contender is measured on, and the engine-side measurements.

One ``flotilla sim`` process serves N engines on consecutive loopback ports. Between contenders each engine's
prefix cache is reset (``POST /reset_prefix_cache``, as on vLLM) so every contender starts cold, and the
engines' own Prometheus counters are scraped before and after a run: the hit rate and the per-engine load come
from the engines, not from the routers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from bench.procs import BenchError, Proc, flotilla_argv, free_ports, wait_http
from bench.results import EngineCounters, counters_from_samples
from flotilla.vllm_metrics import sum_samples


@dataclass(frozen=True)
class FleetSpec:
    """How to start the simulated engines (the flags of ``flotilla sim``)."""

    engines: int = 4
    model: str = "meta-llama/Llama-3.1-8B-Instruct"
    preset: str = "a100-llama3-8b"
    time_scale: float = 1.0
    seed: int = 0
    num_gpu_blocks: int | None = None
    block_size: int = 16
    kv_events: bool = False

    def argv(self, port: int, kv_events_port: int | None) -> list[str]:
        args = [
            "sim", "--engines", str(self.engines), "--host", "127.0.0.1", "--port", str(port),
            "--model", self.model, "--preset", self.preset, "--time-scale", str(self.time_scale),
            "--seed", str(self.seed), "--block-size", str(self.block_size),
        ]  # fmt: skip
        if self.num_gpu_blocks is not None:
            args += ["--num-gpu-blocks", str(self.num_gpu_blocks)]
        if self.kv_events and kv_events_port is not None:
            args += ["--kv-events", "--kv-events-port", str(kv_events_port)]
        return flotilla_argv(*args)

    @property
    def kv_tokens_per_engine(self) -> int | None:
        return None if self.num_gpu_blocks is None else self.num_gpu_blocks * self.block_size


def parse_prometheus(text: str) -> dict[str, float]:
    """``{sample name: value summed over label sets}`` from Prometheus text exposition."""
    return sum_samples(text)


class Fleet:
    """A running ``flotilla sim`` process (or, with :meth:`external`, engines someone else runs)."""

    def __init__(
        self, spec: FleetSpec, urls: list[str], proc: Proc | None, kv_events_port: int | None
    ) -> None:
        self.spec = spec
        self.urls = urls
        self.proc = proc
        self.kv_events_port = kv_events_port

    @classmethod
    async def start(cls, spec: FleetSpec, *, wait: float = 60.0) -> Fleet:
        port = free_ports(spec.engines)
        kv_port = free_ports(spec.engines) if spec.kv_events else None
        proc = Proc(f"sim-{spec.preset}", spec.argv(port, kv_port))
        urls = [f"http://127.0.0.1:{port + i}" for i in range(spec.engines)]
        fleet = cls(spec, urls, proc, kv_port)
        try:
            for url in urls:
                await wait_http(proc, url + "/health", within=wait)
        except BaseException:
            fleet.stop()
            raise
        return fleet

    @classmethod
    def external(cls, spec: FleetSpec, urls: Sequence[str]) -> Fleet:
        return cls(spec, [u.rstrip("/") for u in urls], None, None)

    def kv_event_endpoints(self) -> list[str]:
        """ZMQ endpoints of the engines' KV-event publishers (consecutive ports, like the HTTP ones)."""
        if self.kv_events_port is None:
            return []
        return [f"tcp://127.0.0.1:{self.kv_events_port + i}" for i in range(len(self.urls))]

    async def reset_prefix_caches(self) -> None:
        async with httpx.AsyncClient(timeout=30.0, trust_env=False) as client:
            responses = await asyncio.gather(*(client.post(u + "/reset_prefix_cache") for u in self.urls))
        for url, response in zip(self.urls, responses, strict=True):
            if response.status_code != 200:
                raise BenchError(f"{url}/reset_prefix_cache answered HTTP {response.status_code}")

    async def scrape(self) -> list[EngineCounters]:
        async with httpx.AsyncClient(timeout=30.0, trust_env=False) as client:
            responses = await asyncio.gather(*(client.get(u + "/metrics") for u in self.urls))
        out = []
        for url, response in zip(self.urls, responses, strict=True):
            if response.status_code != 200:
                raise BenchError(f"{url}/metrics answered HTTP {response.status_code}")
            out.append(counters_from_samples(parse_prometheus(response.text)))
        return out

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc.cleanup()
