"""/metrics parses with prometheus_client's parser and carries vLLM's names, types, labels and buckets."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine_sim.metrics import ITL_BUCKETS, TTFT_BUCKETS
from flotilla.tokenizer import synthetic_text
from tests.fleet import SimFleet, sim_fleet

MODEL = "meta-llama/Llama-3.1-8B-Instruct"

# reference/vllm-interface.md §3: family name (as the parser reports it) -> type
EXPECTED = {
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:gpu_cache_usage_perc": "gauge",
    "vllm:prefix_cache_queries": "counter",
    "vllm:prefix_cache_hits": "counter",
    "vllm:prompt_tokens": "counter",
    "vllm:generation_tokens": "counter",
    "vllm:request_success": "counter",
    "vllm:num_preemptions": "counter",
    "vllm:time_to_first_token_seconds": "histogram",
    "vllm:inter_token_latency_seconds": "histogram",
    "vllm:time_per_output_token_seconds": "histogram",
    "vllm:request_time_per_output_token_seconds": "histogram",
    "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:request_queue_time_seconds": "histogram",
    "vllm:request_inference_time_seconds": "histogram",
    "vllm:request_prefill_time_seconds": "histogram",
    "vllm:request_decode_time_seconds": "histogram",
    "vllm:request_prompt_tokens": "histogram",
    "vllm:request_generation_tokens": "histogram",
    "vllm:request_max_num_generation_tokens": "histogram",
    "vllm:request_params_max_tokens": "histogram",
    "vllm:request_params_n": "histogram",
    "vllm:request_prefill_kv_computed_tokens": "histogram",
    "vllm:iteration_tokens_total": "histogram",
    "vllm:cache_config_info": "gauge",
    "vllm:engine_sleep_state": "gauge",
    "vllm:lora_requests_info": "gauge",
}


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    with sim_fleet(1, extra_args=["--time-scale", "0.02", "--enable-lora", "--max-loras", "2"]) as f:
        yield f


def scrape(url: str) -> dict[str, object]:
    text = httpx.get(url + "/metrics").text
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(families: dict[str, object], name: str, suffix: str = "", **labels: str) -> float:
    fam = families[name]
    for s in fam.samples:  # type: ignore[attr-defined]
        if s.name == name + suffix and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise KeyError((name, suffix, labels))


def test_names_types_and_labels(fleet: SimFleet) -> None:
    httpx.post(fleet.urls[0] + "/v1/completions", json={"model": MODEL, "prompt": "warm up", "max_tokens": 3})
    fams = scrape(fleet.urls[0])
    for name, kind in EXPECTED.items():
        assert name in fams, name
        assert fams[name].type == kind, name  # type: ignore[attr-defined]
    running = fams["vllm:num_requests_running"].samples[0]  # type: ignore[attr-defined]
    assert running.labels == {"model_name": MODEL, "engine": "0"}
    assert {
        s.labels["finished_reason"] for s in fams["vllm:request_success"].samples if s.name.endswith("_total")
    } >= {  # type: ignore[attr-defined]
        "stop",
        "length",
        "abort",
    }
    info = fams["vllm:cache_config_info"].samples[0]  # type: ignore[attr-defined]
    assert info.labels["block_size"] == "16"
    assert info.labels["num_gpu_blocks"] == "27000"
    assert "model_name" not in info.labels
    lora = fams["vllm:lora_requests_info"].samples[0]  # type: ignore[attr-defined]
    assert set(lora.labels) == {"max_lora", "waiting_lora_adapters", "running_lora_adapters"}
    assert lora.labels["max_lora"] == "2"


@pytest.mark.parametrize(
    ("name", "buckets"),
    [("vllm:time_to_first_token_seconds", TTFT_BUCKETS), ("vllm:inter_token_latency_seconds", ITL_BUCKETS)],
    ids=["ttft", "itl"],
)
def test_histogram_buckets_are_vllms(fleet: SimFleet, name: str, buckets: tuple[float, ...]) -> None:
    fams = scrape(fleet.urls[0])
    les = [s.labels["le"] for s in fams[name].samples if s.name == name + "_bucket"]  # type: ignore[attr-defined]
    assert [float(x) for x in les[:-1]] == list(buckets)
    assert les[-1] == "+Inf"


def test_counters_move_with_traffic_and_prefix_hits(fleet: SimFleet) -> None:
    url = fleet.urls[0]
    before = scrape(url)
    prompt = synthetic_text(range(500, 900))
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 4, "ignore_eos": True}
    first = httpx.post(url + "/v1/completions", json=body)
    second = httpx.post(url + "/v1/completions", json=body)
    after = scrape(url)

    def delta(name: str, suffix: str = "_total", **labels: str) -> float:
        return sample(after, name, suffix, **labels) - sample(before, name, suffix, **labels)

    prompt_tokens = first.json()["usage"]["prompt_tokens"]
    cached = second.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached > 0
    assert delta("vllm:prefix_cache_queries") == 2 * prompt_tokens
    assert delta("vllm:prefix_cache_hits") == cached
    assert delta("vllm:generation_tokens") == 8
    assert delta("vllm:prompt_tokens") == 2 * prompt_tokens
    assert delta("vllm:request_success", finished_reason="length") == 2
    assert delta("vllm:time_to_first_token_seconds", "_count") == 2
    assert delta("vllm:inter_token_latency_seconds", "_count") == 6
    # the response headers carry the same simulated timings the histograms saw
    assert float(second.headers["x-sim-ttft"]) < float(first.headers["x-sim-ttft"])
    assert delta("vllm:time_to_first_token_seconds", "_sum") == pytest.approx(
        float(first.headers["x-sim-ttft"]) + float(second.headers["x-sim-ttft"]), abs=1e-4
    )
    assert sample(after, "vllm:num_requests_running") == 0
    assert sample(after, "vllm:kv_cache_usage_perc") == 0  # finished requests' blocks are evictable = free
