"""The simulated fleet every contender is measured on, and the engine-side measurements.

One or more ``flotilla sim`` processes serve N engines on consecutive loopback ports (several processes so a
large fleet is not one Python event loop). Between contenders each engine's
prefix cache is reset (``POST /reset_prefix_cache``, as on vLLM) so every contender starts cold, and the
engines' own Prometheus counters are scraped before and after a run: the hit rate and the per-engine load come
from the engines, not from the routers.
"""

from __future__ import annotations

import asyncio
import re
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
    #: simulator processes the engines are spread over (engines split as evenly as possible)
    processes: int = 1
    #: further ``flotilla sim`` flags (e.g. the LoRA benchmark's ``--enable-lora --max-loras 4``)
    extra_args: tuple[str, ...] = ()

    def split(self) -> list[int]:
        """Engines per simulator process."""
        n = max(1, min(self.processes, self.engines))
        return [self.engines // n + (1 if i < self.engines % n else 0) for i in range(n)]

    def argv(self, port: int, kv_events_port: int | None, engines: int | None = None) -> list[str]:
        args = [
            "sim", "--engines", str(self.engines if engines is None else engines), "--host", "127.0.0.1", "--port", str(port),
            "--model", self.model, "--preset", self.preset, "--time-scale", str(self.time_scale),
            "--seed", str(self.seed), "--block-size", str(self.block_size),
        ]  # fmt: skip
        if self.num_gpu_blocks is not None:
            args += ["--num-gpu-blocks", str(self.num_gpu_blocks)]
        if self.kv_events and kv_events_port is not None:
            args += ["--kv-events", "--kv-events-port", str(kv_events_port)]
        return flotilla_argv(*args, *self.extra_args)

    @property
    def kv_tokens_per_engine(self) -> int | None:
        return None if self.num_gpu_blocks is None else self.num_gpu_blocks * self.block_size


def parse_prometheus(text: str) -> dict[str, float]:
    """``{sample name: value summed over label sets}`` from Prometheus text exposition."""
    return sum_samples(text)


_BUCKET = re.compile(r'^vllm:time_to_first_token_seconds_bucket\{[^}]*le="(?P<le>[^"]+)"[^}]*\}\s+(?P<n>\S+)')


def ttft_buckets(text: str) -> list[tuple[float, float]]:
    """The ``vllm:time_to_first_token_seconds`` histogram of one /metrics text: (le, cumulative count), summed
    over label sets."""
    total: dict[float, float] = {}
    for line in text.splitlines():
        m = _BUCKET.match(line)
        if m is not None:
            le = float(m["le"])  # "+Inf" parses as inf
            total[le] = total.get(le, 0.0) + float(m["n"])
    return sorted(total.items())


class Fleet:
    """A running ``flotilla sim`` process (or, with :meth:`external`, engines someone else runs)."""

    def __init__(
        self, spec: FleetSpec, urls: list[str], proc: Proc | None, kv_events_port: int | None,
        *, procs: list[Proc] | None = None, kv_endpoints: list[str] | None = None,
    ) -> None:  # fmt: skip
        self.spec = spec
        self.urls = urls
        self.procs = procs if procs is not None else ([proc] if proc is not None else [])
        self.proc = proc
        self.kv_events_port = kv_events_port
        self._kv_endpoints = kv_endpoints

    @classmethod
    async def start(cls, spec: FleetSpec, *, wait: float = 60.0) -> Fleet:
        """One ``flotilla sim`` process per entry of :meth:`FleetSpec.split`, each on its own port range."""
        urls: list[str] = []
        kv: list[str] = []
        procs: list[Proc] = []
        fleet = cls(spec, urls, None, None, procs=procs, kv_endpoints=kv if spec.kv_events else None)
        try:
            for k, count in enumerate(spec.split()):
                port = free_ports(count)
                kv_port = free_ports(count) if spec.kv_events else None
                proc = Proc(f"sim{k}-{spec.preset}", spec.argv(port, kv_port, count))
                procs.append(proc)
                mine = [f"http://127.0.0.1:{port + i}" for i in range(count)]
                urls.extend(mine)
                if kv_port is not None:
                    kv.extend(f"tcp://127.0.0.1:{kv_port + i}" for i in range(count))
                for url in mine:
                    await wait_http(proc, url + "/health", within=wait)
        except BaseException:
            fleet.stop()
            raise
        fleet.proc = procs[0] if procs else None
        return fleet

    @classmethod
    def external(cls, spec: FleetSpec, urls: Sequence[str]) -> Fleet:
        return cls(spec, [u.rstrip("/") for u in urls], None, None)

    def kv_event_endpoints(self) -> list[str]:
        """ZMQ endpoints of the engines' KV-event publishers (consecutive ports, like the HTTP ones)."""
        if self._kv_endpoints is not None:
            return list(self._kv_endpoints)
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
            out.append(counters_from_samples(parse_prometheus(response.text), ttft_buckets(response.text)))
        return out

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()
            proc.cleanup()
