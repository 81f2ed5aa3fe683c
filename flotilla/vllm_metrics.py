"""vLLM's Prometheus metrics, reduced to what routing and autoscaling decide on.

The gateway scrapes every engine a few times a second and the autoscaler scrapes the fleet, so parsing must be
cheap and tolerant:

* Only the handful of families we use are parsed; every other line is skipped by a prefix test, without
  tokenising it (a vLLM ``/metrics`` page is mostly histogram buckets).
* Both the current and the deprecated names are read (``kv_cache_usage_perc`` / ``gpu_cache_usage_perc``,
  ``prefix_cache_*`` / ``gpu_prefix_cache_*``), so one client works against old and new vLLM releases.
* Data-parallel engines export one series per ``engine`` label: queue gauges and counters are summed, the KV
  usage fraction is averaged (it is a fraction per engine).
* ``vllm:lora_requests_info`` gets a new series whenever its label set changes, with the Unix time of the
  update as value, so the series with the largest value is the current one.
* The autoscaler also needs the finished-request counter and the TTFT histogram; they are parsed only when
  asked for (``latency=True``), because the histogram buckets would double the gateway's parsing work for
  nothing. Both are cumulative: a consumer takes deltas between two scrapes of the same pod.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import httpx

__all__ = ["EngineMetrics", "LoraInfo", "MetricsError", "parse_metrics", "scrape_metrics", "sum_samples"]


class MetricsError(Exception):
    """An engine's ``/metrics`` could not be fetched or had none of vLLM's required gauges."""


@dataclass(frozen=True, slots=True)
class LoraInfo:
    """The current ``vllm:lora_requests_info`` series: adapters in the running batch and waiting for a slot."""

    running: frozenset[str] = frozenset()
    waiting: frozenset[str] = frozenset()
    max_lora: int = 0


@dataclass(frozen=True, slots=True)
class EngineMetrics:
    running: float = 0.0
    waiting: float = 0.0
    #: fraction 0–1 of KV blocks in use (cached-but-free blocks count as free)
    kv_usage: float = 0.0
    #: prompt tokens found in the prefix cache / looked up (cumulative counters)
    prefix_hits: float = 0.0
    prefix_queries: float = 0.0
    lora: LoraInfo | None = None
    block_size: int | None = None
    num_gpu_blocks: int | None = None
    #: ``vllm:request_success_total`` summed over finish reasons and engines (cumulative; ``latency=True``)
    requests_finished: float = 0.0
    #: ``vllm:time_to_first_token_seconds`` as cumulative (upper bound, count) pairs sorted by bound, the last
    #: bound ``inf``; summed over engines (``latency=True`` only, else empty)
    ttft_buckets: tuple[tuple[float, float], ...] = ()
    #: names of every family seen (to tell "absent" from "zero")
    families: frozenset[str] = field(default_factory=frozenset)


_LINE_RE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

_SUMMED = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:prefix_cache_hits_total": "prefix_hits",
    "vllm:prefix_cache_queries_total": "prefix_queries",
    "vllm:gpu_prefix_cache_hits_total": "old_prefix_hits",
    "vllm:gpu_prefix_cache_queries_total": "old_prefix_queries",
}
_AVERAGED = {"vllm:kv_cache_usage_perc": "kv", "vllm:gpu_cache_usage_perc": "old_kv"}
_WANTED = (*_SUMMED, *_AVERAGED, "vllm:lora_requests_info", "vllm:cache_config_info")
_FINISHED = "vllm:request_success_total"
_TTFT_BUCKET = "vllm:time_to_first_token_seconds_bucket"
_WANTED_LATENCY = (*_WANTED, _FINISHED, _TTFT_BUCKET)


def _labels(raw: str | None) -> dict[str, str]:
    if not raw:
        return {}
    return {
        k: v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\") for k, v in _LABEL_RE.findall(raw)
    }


def _names(value: str) -> frozenset[str]:
    return frozenset(part.strip() for part in value.split(",") if part.strip())


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "", "None") else None
    except ValueError:
        return None


def parse_metrics(text: str, *, latency: bool = False) -> EngineMetrics:
    """Parse a Prometheus text page from a vLLM engine (or engine_sim). Unknown lines are ignored.

    ``latency=True`` also reads the finished-request counter and the TTFT histogram (for the autoscaler).
    """
    wanted = _WANTED_LATENCY if latency else _WANTED
    finished = 0.0
    ttft: dict[float, float] = {}
    sums: dict[str, float] = {}
    kv: dict[str, list[float]] = {}
    families: set[str] = set()
    lora_best: tuple[float, dict[str, str]] | None = None
    block_size: int | None = None
    num_gpu_blocks: int | None = None
    for line in text.splitlines():
        if not line.startswith(wanted):
            continue
        m = _LINE_RE.match(line)
        if m is None:
            continue
        name = m["name"]
        try:
            value = float(m["value"])
        except ValueError:
            continue
        if value != value:  # NaN: an engine without data yet
            continue
        families.add(name)
        if name in _SUMMED:
            key = _SUMMED[name]
            sums[key] = sums.get(key, 0.0) + value
        elif name in _AVERAGED:
            kv.setdefault(_AVERAGED[name], []).append(value)
        elif name == _FINISHED:
            finished += value
        elif name == _TTFT_BUCKET:
            le = _labels(m["labels"]).get("le")
            try:
                bound = float(le) if le is not None else None
            except ValueError:
                bound = None
            if bound is not None:
                ttft[bound] = ttft.get(bound, 0.0) + value
        elif name == "vllm:lora_requests_info":
            if lora_best is None or value >= lora_best[0]:
                lora_best = (value, _labels(m["labels"]))
        elif name == "vllm:cache_config_info":
            labels = _labels(m["labels"])
            block_size = _int(labels.get("block_size")) or block_size
            blocks = _int(labels.get("num_gpu_blocks"))
            if blocks is not None:
                num_gpu_blocks = (num_gpu_blocks or 0) + blocks
    usage = kv.get("kv") or kv.get("old_kv") or []
    lora = None
    if lora_best is not None:
        labels = lora_best[1]
        lora = LoraInfo(
            running=_names(labels.get("running_lora_adapters", "")),
            waiting=_names(labels.get("waiting_lora_adapters", "")),
            max_lora=_int(labels.get("max_lora")) or 0,
        )
    return EngineMetrics(
        running=sums.get("running", 0.0),
        waiting=sums.get("waiting", 0.0),
        kv_usage=sum(usage) / len(usage) if usage else 0.0,
        prefix_hits=sums.get("prefix_hits", sums.get("old_prefix_hits", 0.0)),
        prefix_queries=sums.get("prefix_queries", sums.get("old_prefix_queries", 0.0)),
        lora=lora,
        block_size=block_size,
        num_gpu_blocks=num_gpu_blocks,
        requests_finished=finished,
        ttft_buckets=tuple(sorted(ttft.items())),
        families=frozenset(families),
    )


def sum_samples(text: str, prefixes: tuple[str, ...] = ("",)) -> dict[str, float]:
    """``{sample name: value summed over label sets}`` for the samples whose name starts with one of
    ``prefixes`` (all by default): the generic reading the benchmarks use for counters (one parser in the
    project, this module's)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#" or not line.startswith(prefixes):
            continue
        m = _LINE_RE.match(line)
        if m is None:
            continue
        try:
            value = float(m["value"])
        except ValueError:
            continue
        if value == value:  # NaN: no data yet
            out[m["name"]] = out.get(m["name"], 0.0) + value
    return out


async def scrape_metrics(
    client: httpx.AsyncClient, base_url: str, *, request_timeout: float = 2.0, latency: bool = False
) -> EngineMetrics:
    """GET ``{base_url}/metrics`` and parse it; any transport error or non-200 becomes :class:`MetricsError`."""
    url = base_url.rstrip("/") + "/metrics"
    try:
        response = await client.get(url, timeout=request_timeout)
    except httpx.HTTPError as exc:
        raise MetricsError(f"scraping {url} failed: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise MetricsError(f"scraping {url} returned HTTP {response.status_code}")
    metrics = parse_metrics(response.text, latency=latency)
    if (
        "vllm:num_requests_running" not in metrics.families
        and "vllm:num_requests_waiting" not in metrics.families
    ):
        raise MetricsError(f"{url} exposes none of vLLM's queue gauges")
    return metrics
