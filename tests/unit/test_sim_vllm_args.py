"""``flotilla sim serve``'s reading of vLLM's command line (table-driven, no processes)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from engine_sim import vllm_args
from engine_sim.cli import sim
from engine_sim.config import DEFAULT_MODEL

KV = json.dumps(
    {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": "tcp://*:6000", "topic": "t"}
)

MAPPED = [
    pytest.param([], {"model": DEFAULT_MODEL, "served_model_name": None, "host": "0.0.0.0", "port": 8000,
                      "block_size": 16, "max_model_len": 131_072, "kv_events": False, "enable_lora": False},
                 id="defaults-bind-every-interface-like-vllm"),
    pytest.param(["--model", "org/m", "--served-model-name", "m", "--port", "9001", "--block-size", "32",
                  "--max-model-len", "4096"],
                 {"model": "org/m", "served_model_name": "m", "port": 9001, "block_size": 32,
                  "max_model_len": 4096}, id="operator-basics"),
    pytest.param(["org/m", "--port", "9"], {"model": "org/m", "port": 9}, id="positional-model-like-vllm-serve"),
    pytest.param(["--max_num_seqs=7", "--max-num-batched-tokens=512"],
                 {"max_num_seqs": 7, "max_num_batched_tokens": 512}, id="underscores-and-equals"),
    pytest.param(["--host", "10.1.2.3"], {"host": "10.1.2.3"}, id="host"),
    pytest.param(["--no-enable-prefix-caching", "--seed", "4", "--scheduling-policy", "priority"],
                 {"enable_prefix_caching": False, "seed": 4, "scheduling_policy": "priority"}, id="scheduler"),
    pytest.param(["--enable-lora", "--max-loras", "3", "--max-cpu-loras", "8", "--max-lora-rank", "64",
                  "--lora-modules", "a=/x", '{"name": "b", "path": "/y"}'],
                 {"enable_lora": True, "max_loras": 3, "max_cpu_loras": 8,
                  "lora_modules": {"a": "/x", "b": "/y"}}, id="lora"),
    pytest.param(["--kv-events-config", KV],
                 {"kv_events": True, "kv_events_endpoint": "tcp://*:6000", "kv_events_topic": "t"},
                 id="kv-events-config"),
    pytest.param(["--kv-events-config", '{"enable_kv_cache_events": false}'], {"kv_events": False},
                 id="kv-events-off"),
    pytest.param(["--sim-preset", "zero", "--sim-startup-delay=2", "--sim-time-scale", "0.1",
                  "--sim-num-gpu-blocks", "64"],
                 {"preset": "zero", "startup_delay": 2.0, "time_scale": 0.1, "num_gpu_blocks": 64},
                 id="simulator-knobs"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "expected"), MAPPED)
def test_vllm_flags_map_onto_the_engine_config(argv: list[str], expected: dict[str, Any]) -> None:
    config = vllm_args.parse(argv).config
    assert {k: getattr(config, k) for k in expected} == expected


def test_kv_events_default_endpoint_binds_every_interface() -> None:
    config = vllm_args.parse(["--kv-events-config", '{"enable_kv_cache_events": true}']).config
    assert config.kv_events_endpoint == "tcp://*:5557"


NOT_FATAL = [
    pytest.param(["--tensor-parallel-size", "4", "--gpu-memory-utilization", "0.9", "--enforce-eager"],
                 ["--tensor-parallel-size", "4", "--gpu-memory-utilization", "0.9", "--enforce-eager"], [],
                 id="known-without-effect"),
    pytest.param(["--api-key", "secret"], ["--api-key", "***"], [], id="api-key-redacted"),
    pytest.param(["--served-model-name", "a", "b"], ["--served-model-name", "b"], [], id="extra-aliases"),
    pytest.param(["--brand-new-vllm-flag", "--model", "m"], [], ["--brand-new-vllm-flag"], id="unknown-switch"),
    pytest.param(["--model", "m", "--speculative-config", "{}"], [], ["--speculative-config", "{}"],
                 id="unknown-with-value"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "no_effect", "unknown"), NOT_FATAL)
def test_flags_without_meaning_here_are_reported_not_fatal(
    argv: list[str], no_effect: list[str], unknown: list[str]
) -> None:
    parsed = vllm_args.parse(argv)
    assert parsed.no_effect == no_effect
    assert parsed.unknown == unknown


def test_an_unknown_flag_value_never_becomes_the_model() -> None:
    assert vllm_args.parse(["--new-flag", "x", "--model", "m"]).config.model == "m"


BAD = [
    pytest.param(["--port", "abc"], "--port", id="port-not-int"),
    pytest.param(["--block-size", "1000"], "block_size", id="block-size-range"),
    pytest.param(["--kv-events-config", "{nope"], "not JSON", id="kv-config-json"),
    pytest.param(["--lora-modules", "nopath"], "name=path", id="lora-module"),
    pytest.param(["--sim-preset", "tpu"], "tpu", id="preset"),
    pytest.param(["--scheduling-policy", "lifo"], "lifo", id="policy"),
]


@pytest.mark.parametrize(("argv", "message"), BAD)
def test_bad_values_of_mapped_flags_are_errors(argv: list[str], message: str) -> None:
    with pytest.raises(vllm_args.VllmArgsError, match=message):
        vllm_args.parse(argv)


def test_cli_reports_a_bad_value_in_one_line() -> None:
    result = CliRunner().invoke(sim, ["serve", "--model", "m", "--port", "abc"])
    assert result.exit_code == 2
    assert "--port" in result.output


def test_a_local_tokenizer_is_used_as_vllm_would(tmp_path: Any) -> None:
    """``--tokenizer DIR`` (or a ``--model`` that is a local directory with tokenizer.json) gives the simulated
    pod the model's real tokenizer, so a mounted tokenizer reaches simulator and gateway alike."""
    (tmp_path / "tokenizer.json").write_text("{}")
    assert vllm_args.parse(["--model", "org/m", "--tokenizer", str(tmp_path)]).config.tokenizer == str(
        tmp_path
    )
    assert vllm_args.parse(["--model", str(tmp_path)]).config.tokenizer == str(tmp_path)
    served = vllm_args.parse(["--model", "org/m", "--chat-template", "{{ messages }}"])
    assert served.config.chat_template == "{{ messages }}"


def test_a_hub_tokenizer_name_downloads_nothing_and_is_logged() -> None:
    parsed = vllm_args.parse(["--model", "org/m", "--tokenizer", "org/tok"])
    assert parsed.config.tokenizer is None
    assert parsed.no_effect == ["--tokenizer", "org/tok"]
    assert vllm_args.parse(["--model", "org/m"]).config.tokenizer is None
