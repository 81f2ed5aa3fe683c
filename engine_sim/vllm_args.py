"""vLLM's ``serve`` command line, read into an :class:`EngineConfig`: what ``flotilla sim serve`` runs on.

The operator writes one argument list for an engine pod (``flotilla_operator.builders.engine_args``). When a
ModelDeployment asks for the simulator, the same list is handed to ``flotilla sim serve``, so what runs in the
cluster is the operator's real pod spec, not a fixture's idea of it. That only holds if the simulator reads
vLLM's flags the way vLLM does:

* the flags that change behaviour Flotilla can observe (names, port, block size, context length, batch limits,
  prefix caching, LoRA, KV events, a local ``--tokenizer``/``--chat-template``) are mapped onto the simulator's
  config;
* flags vLLM accepts but that mean nothing without a GPU (``--tensor-parallel-size``, ``--dtype``, ...) are
  accepted and logged, never fatal: a user's ``engine.args`` written for vLLM must not crash-loop a simulated
  pod. A value that *is* mapped but malformed (``--port abc``) is still an error, as in vLLM;
* the bind address defaults to vLLM's: every interface (``0.0.0.0``). A pod's readiness probe dials the pod
  IP and ``kubectl port-forward`` dials loopback inside the pod, so binding only one of them would break the
  other. The local ``flotilla sim`` keeps loopback as its default.

Parsing is argparse, as in vLLM (whose ``FlexibleArgumentParser`` also accepts ``--max_model_len`` spellings
and ``--flag=value``). Simulator-only knobs are ``--sim-*`` flags that vLLM does not have, so they can never be
confused with a vLLM flag; the operator puts them in the container's ``command``, leaving ``args`` identical
to what a vLLM pod would get.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from engine_sim.config import DEFAULT_MODEL, PRESETS, EngineConfig

#: vLLM's ``--host`` default (None = every interface); see the module docstring
DEFAULT_HOST = "0.0.0.0"
#: vLLM's ``--kv-events-config`` defaults (``vllm/config/kv_events.py``)
DEFAULT_KV_ENDPOINT = "tcp://*:5557"

#: vLLM flags accepted without effect: they size or place the real model, which the simulator does not load
NO_EFFECT = (
    "tensor-parallel-size", "pipeline-parallel-size", "data-parallel-size", "gpu-memory-utilization",
    "max-lora-rank", "dtype", "quantization", "revision", "download-dir", "load-format",
    "kv-cache-dtype", "swap-space", "cpu-offload-gb", "api-key",
)  # fmt: skip
#: vLLM boolean flags accepted without effect (they take no value, so they must be known to be skipped)
NO_EFFECT_SWITCHES = (
    "enforce-eager", "trust-remote-code", "disable-log-requests", "disable-log-stats",
    "enable-chunked-prefill", "no-enable-chunked-prefill", "enable-prompt-tokens-details",
    "enable-auto-tool-choice", "disable-frontend-multiprocessing",
)  # fmt: skip


class VllmArgsError(ValueError):
    """A mapped flag has a bad value (one line, like vLLM's own usage errors)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise VllmArgsError(message)


@dataclass(frozen=True)
class ServeArgs:
    """The parsed command line: the engine to run, and what was accepted without effect (for the log)."""

    config: EngineConfig
    log_level: str = "info"
    #: vLLM flags known to have no effect in the simulator, with their values
    no_effect: list[str] = field(default_factory=list)
    #: flags (and stray values) the parser did not recognise; vLLM may know them, the simulator does not
    unknown: list[str] = field(default_factory=list)


def _normalise(argv: Sequence[str]) -> list[str]:
    """``--max_model_len=4`` → ``--max-model-len=4`` (vLLM accepts both spellings of every flag)."""
    out = []
    for arg in argv:
        if arg.startswith("--"):
            name, sep, value = arg.partition("=")
            arg = name.replace("_", "-") + sep + value
        out.append(arg)
    return out


def _parser() -> _Parser:
    p = _Parser(prog="flotilla sim serve", add_help=False, allow_abbrev=False)
    p.add_argument("--model", default=None)
    p.add_argument("--served-model-name", nargs="+", default=None)
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--max-num-seqs", type=int, default=None)
    p.add_argument("--max-num-batched-tokens", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scheduling-policy", choices=["fcfs", "priority"], default="fcfs")
    p.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--enable-lora", action="store_true")
    p.add_argument("--max-loras", type=int, default=1)
    p.add_argument("--max-cpu-loras", type=int, default=None)
    p.add_argument("--lora-modules", nargs="+", default=[])
    p.add_argument("--kv-events-config", default=None)
    p.add_argument("--tokenizer", default=None)
    p.add_argument("--chat-template", default=None)
    p.add_argument("--uvicorn-log-level", default="info")
    for name in NO_EFFECT:
        p.add_argument(f"--{name}", dest="noeffect_" + name.replace("-", "_"), default=None)
    for name in NO_EFFECT_SWITCHES:
        p.add_argument(f"--{name}", dest="noeffect_" + name.replace("-", "_"), action="store_true")
    sim = p.add_argument_group("simulator (not vLLM flags)")
    sim.add_argument("--sim-preset", choices=sorted(PRESETS), default="a100-llama3-8b")
    sim.add_argument("--sim-startup-delay", type=float, default=0.0)
    sim.add_argument("--sim-time-scale", type=float, default=1.0)
    sim.add_argument("--sim-num-gpu-blocks", type=int, default=None)
    return p


def lora_module(value: str) -> tuple[str, str]:
    """``--lora-modules`` item: ``name=path`` or vLLM's JSON form (``{"name": ..., "path": ...}``)."""
    if value.startswith("{"):
        spec = json.loads(value)
        return str(spec["name"]), str(spec["path"])
    name, sep, path = value.partition("=")
    if not sep:
        raise VllmArgsError(f"--lora-modules: expected name=path or JSON, got {value!r}")
    return name, path


def _kv_events(raw: str | None) -> dict[str, Any]:
    """``--kv-events-config`` JSON → the simulator's KV-event fields (empty when events are off)."""
    if raw is None:
        return {}
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise VllmArgsError(f"--kv-events-config is not JSON: {exc}") from exc
    if not isinstance(cfg, dict):
        raise VllmArgsError("--kv-events-config must be a JSON object")
    if not cfg.get("enable_kv_cache_events") or cfg.get("publisher", "zmq") != "zmq":
        return {}
    out: dict[str, Any] = {
        "kv_events": True,
        "kv_events_endpoint": str(cfg.get("endpoint") or DEFAULT_KV_ENDPOINT),
        "kv_events_replay_endpoint": cfg.get("replay_endpoint") or None,
        "kv_events_topic": str(cfg.get("topic") or "") or None,
    }
    if "buffer_steps" in cfg:
        out["kv_events_buffer_steps"] = int(cfg["buffer_steps"])
    return out


def _tokenizer(tokenizer: str | None, model: str) -> str | None:
    """vLLM's tokenizer source: ``--tokenizer``, else the model's own directory. Only a local path can be used
    (nothing is downloaded); a hub name leaves the synthetic tokenizer in place and is logged by the caller."""
    for candidate in (tokenizer, model):
        if candidate is None:
            continue
        path = Path(candidate)
        if path.is_file() or (path / "tokenizer.json").is_file():
            return candidate
        if candidate == tokenizer:
            return None  # an explicit --tokenizer that is not local: never fall back to the model's name
    return None


def parse(argv: Sequence[str]) -> ServeArgs:
    """Read a vLLM ``serve`` command line (plus ``--sim-*`` knobs); raises :class:`VllmArgsError`."""
    argv = _normalise(argv)
    # ``vllm serve MODEL ...``: the model may come first as a positional (the operator writes ``--model``)
    model_tag = argv.pop(0) if argv and not argv[0].startswith("-") else None
    ns, unknown = _parser().parse_known_args(argv)
    model = ns.model or model_tag or DEFAULT_MODEL
    fields: dict[str, Any] = {
        "model": model,
        # vLLM serves every alias; metrics and the gateway use the first, and so does the simulator
        "served_model_name": ns.served_model_name[0] if ns.served_model_name else None,
        "host": ns.host or DEFAULT_HOST,
        "port": ns.port,
        "block_size": ns.block_size,
        "max_num_seqs": ns.max_num_seqs,
        "max_num_batched_tokens": ns.max_num_batched_tokens,
        "seed": ns.seed,
        "scheduling_policy": ns.scheduling_policy,
        "enable_prefix_caching": ns.enable_prefix_caching,
        "enable_lora": ns.enable_lora,
        "max_loras": ns.max_loras,
        "max_cpu_loras": ns.max_cpu_loras,
        "lora_modules": dict(lora_module(v) for v in ns.lora_modules),
        "preset": ns.sim_preset,
        "startup_delay": ns.sim_startup_delay,
        "time_scale": ns.sim_time_scale,
        "tokenizer": _tokenizer(ns.tokenizer, model),
        "chat_template": ns.chat_template,
        **_kv_events(ns.kv_events_config),
    }
    if ns.max_model_len is not None:
        fields["max_model_len"] = ns.max_model_len
    if ns.sim_num_gpu_blocks is not None:
        fields["num_gpu_blocks"] = ns.sim_num_gpu_blocks
    try:
        config = EngineConfig(**fields)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise VllmArgsError(str(exc)) from exc
    no_effect = []
    for name in (*NO_EFFECT, *NO_EFFECT_SWITCHES):
        value = getattr(ns, f"noeffect_{name.replace('-', '_')}")
        if value is True:
            no_effect.append(f"--{name}")
        elif value not in (None, False):
            no_effect += [f"--{name}", "***" if name == "api-key" else str(value)]
    if ns.tokenizer is not None and fields["tokenizer"] is None:
        no_effect += ["--tokenizer", ns.tokenizer]  # a hub name: the simulator downloads nothing
    if ns.served_model_name and len(ns.served_model_name) > 1:
        no_effect += ["--served-model-name", *ns.served_model_name[1:]]
    return ServeArgs(config=config, log_level=ns.uvicorn_log_level, no_effect=no_effect, unknown=unknown)
