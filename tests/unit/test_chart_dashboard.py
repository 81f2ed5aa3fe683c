"""The Grafana dashboard shipped with the chart queries metrics that Flotilla's gateway and vLLM engines really
export (names read from the live registries, not typed again), and covers what operators watch."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from engine_sim.metrics import EngineMetrics
from gateway.endpoints import EndpointPool
from gateway.telemetry import GatewayMetrics

DASHBOARD = Path(__file__).parents[2] / "charts" / "flotilla" / "dashboards" / "flotilla.json"
#: series names in PromQL: ours (flotilla_*, vllm:*) and kube-state-metrics' (kube_*, not ours to check)
SERIES = re.compile(r"\b(flotilla_[a-z_]+|vllm:[a-z_]+|kube_[a-z_]+)")


def exported() -> set[str]:
    """Sample names (with _total/_bucket/_sum/_count) of a gateway and an engine registry."""
    gateway = GatewayMetrics(EndpointPool())
    gateway.watch_demand({"m": 1}, {"m": 1}, {"m": 1}, lambda: ["m"])
    gateway.ttft.labels("m").observe(0.1)
    gateway.itl.labels("m").observe(0.01)
    gateway.match_ratio.observe(0.5)
    gateway.requests.labels("m", "e", "200").inc()
    gateway.rejections.labels("auth").inc()
    gateway.retries.labels("connect").inc()
    engine = EngineMetrics(model_name="m", engine=0, max_model_len=2048, cache_info={"block_size": "16"})
    names: set[str] = set()
    for registry in (gateway.registry, engine.registry):
        text = generate_latest(registry).decode()
        for family in text_string_to_metric_families(text):
            names.add(family.name)
            names.update(s.name for s in family.samples)
    return names


def exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_every_flotilla_and_vllm_series_in_the_dashboard_is_exported() -> None:
    used = {m for e in exprs() for m in SERIES.findall(e) if not m.startswith("kube_")}
    assert used, "the dashboard queries nothing"
    missing = used - exported()
    assert not missing, f"the dashboard queries series nobody exports: {sorted(missing)}"


def test_dashboard_covers_latency_throughput_hits_queues_kv_and_replicas() -> None:
    text = "\n".join(exprs())
    for needle in (
        "flotilla_gateway_ttft_seconds_bucket",
        "flotilla_gateway_itl_seconds_bucket",
        "vllm:generation_tokens_total",
        "vllm:prefix_cache_hits_total",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "count by (model_name) (vllm:num_requests_running",
        "kube_deployment_spec_replicas",
    ):
        assert needle in text, needle


def test_panels_do_not_overlap() -> None:
    dash = json.loads(DASHBOARD.read_text())
    cells: set[tuple[int, int]] = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        own = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not own & cells, p["title"]
        assert g["x"] + g["w"] <= 24, p["title"]
        cells |= own
