from __future__ import annotations

import pytest

from flotilla.vllm_metrics import LoraInfo, parse_metrics

NEW = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
vllm:num_requests_waiting{engine="0",model_name="m"} 4.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.25
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 1000.0
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 250.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="m"} 0.0
vllm:lora_requests_info{max_lora="2",running_lora_adapters="a,b",waiting_lora_adapters=""} 1.7e9
vllm:lora_requests_info{max_lora="2",running_lora_adapters="a",waiting_lora_adapters="c"} 1.8e9
vllm:cache_config_info{block_size="16",engine="0",num_gpu_blocks="1000",enable_prefix_caching="True"} 1.0
"""

OLD = """vllm:num_requests_running{model_name="m"} 1
vllm:num_requests_waiting{model_name="m"} 0
vllm:gpu_cache_usage_perc{model_name="m"} 0.75
vllm:gpu_prefix_cache_queries_total{model_name="m"} 10
vllm:gpu_prefix_cache_hits_total{model_name="m"} 5
"""


@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        (NEW, "running", 5.0),
        (NEW, "waiting", 4.0),
        (NEW, "kv_usage", 0.375),
        (NEW, "prefix_queries", 1000.0),
        (NEW, "prefix_hits", 250.0),
        (NEW, "block_size", 16),
        (NEW, "num_gpu_blocks", 1000),
        (NEW, "lora", LoraInfo(running=frozenset({"a"}), waiting=frozenset({"c"}), max_lora=2)),
        (OLD, "kv_usage", 0.75),
        (OLD, "prefix_hits", 5.0),
        (OLD, "prefix_queries", 10.0),
        (OLD, "lora", None),
        ("", "running", 0.0),
        ('vllm:num_requests_running{model_name="m"} NaN\n', "running", 0.0),
        ("garbage line\nvllm:num_requests_waiting 7\n", "waiting", 7.0),
    ],
    ids=[
        "running-summed-over-engines",
        "waiting",
        "kv-averaged",
        "queries",
        "hits",
        "block-size",
        "gpu-blocks",
        "lora-latest-series",
        "old-kv-name",
        "old-hits-name",
        "old-queries-name",
        "no-lora",
        "empty",
        "nan-ignored",
        "junk-tolerated",
    ],
)
def test_parse(text: str, field: str, expected: object) -> None:
    assert getattr(parse_metrics(text), field) == expected


def test_new_kv_name_wins_over_old() -> None:
    text = 'vllm:kv_cache_usage_perc{engine="0"} 0.1\nvllm:gpu_cache_usage_perc{engine="0"} 0.9\n'
    assert parse_metrics(text).kv_usage == pytest.approx(0.1)
