"""``flotilla sim``: serve N simulated vLLM engines on ports P..P+N-1 from one process.

``flotilla sim serve [MODEL] [vLLM flags]`` is the other entry: one engine configured by vLLM's own command line
(:mod:`engine_sim.vllm_args`), which is how the operator runs a ModelDeployment whose engine is the simulator.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any

import click
from pydantic import ValidationError

from engine_sim import vllm_args
from engine_sim.config import DEFAULT_MODEL, PRESETS, EngineConfig, Faults
from engine_sim.runner import fleet_configs, serve_engines


@click.group(invoke_without_command=True, context_settings={"show_default": True})
@click.option("--engines", "-n", default=1, type=click.IntRange(1, 256), help="Number of engines.")
@click.option("--port", "-p", default=8000, type=click.IntRange(1, 65535), help="Port of engine 0.")
@click.option("--host", default="127.0.0.1", help="Bind address (loopback by default).")
@click.option("--model", default=DEFAULT_MODEL, help="Base model name.")
@click.option("--served-model-name", default=None, help="Name clients use (default: --model).")
@click.option(
    "--preset", type=click.Choice(sorted(PRESETS)), default="a100-llama3-8b", help="Latency profile."
)
@click.option("--time-scale", default=1.0, type=click.FloatRange(min=0, min_open=True),
              help="Wall seconds per simulated second (<1 runs faster than real time).")  # fmt: skip
@click.option("--seed", default=0, type=int, help="Seed of block hashes and outputs (shared by all engines).")
@click.option("--block-size", default=16, type=click.IntRange(1, 256))
@click.option("--num-gpu-blocks", default=None, type=click.IntRange(2),
              help="KV blocks per engine (default: the preset's; 27000 for the hand-made ones).")  # fmt: skip
@click.option("--max-num-seqs", default=None, type=click.IntRange(1), help="Default from the preset.")
@click.option(
    "--max-num-batched-tokens", default=None, type=click.IntRange(1), help="Default from the preset."
)
@click.option("--max-model-len", default=131_072, type=click.IntRange(2))
@click.option("--scheduling-policy", type=click.Choice(["fcfs", "priority"]), default="fcfs")
@click.option("--no-prefix-caching", is_flag=True, help="Disable the prefix cache.")
@click.option(
    "--output-len", default="8:256", help="Natural output length range MIN:MAX (when not ignore_eos)."
)
@click.option(
    "--tokenizer",
    default=None,
    help="A model directory (tokenizer.json + its chat template) or tokenizer.json (default: Flotilla's own).",
)
@click.option("--chat-template", default=None, help="As vLLM's: a template file or the template itself.")
@click.option("--kv-events", is_flag=True, help="Publish vLLM KV events over ZMQ.")
@click.option("--kv-events-port", default=5557, type=click.IntRange(1, 65535), help="PUB port of engine 0.")
@click.option("--kv-events-replay-port", default=None, type=click.IntRange(1, 65535),
              help="Replay ROUTER port of engine 0 (off by default).")  # fmt: skip
@click.option("--kv-events-format", type=click.Choice(["map", "array"]), default="map")
@click.option("--enable-lora", is_flag=True)
@click.option("--max-loras", default=1, type=click.IntRange(1))
@click.option("--max-cpu-loras", default=None, type=click.IntRange(1))
@click.option("--lora-load-latency", default=0.5, type=click.FloatRange(0), help="Simulated seconds.")
@click.option("--lora-step-overhead", default=0.1, type=click.FloatRange(0),
              help="Extra step time with adapters in the batch (fraction).")  # fmt: skip
@click.option("--lora-modules", multiple=True, help="Static adapter name=path (repeatable).")
@click.option("--failure-rate", default=0.0, type=click.FloatRange(0, 1))
@click.option("--latency-spike-rate", default=0.0, type=click.FloatRange(0, 1))
@click.option("--latency-spike-factor", default=10.0, type=click.FloatRange(1))
@click.option("--die-mid-stream-rate", default=0.0, type=click.FloatRange(0, 1))
@click.option(
    "--startup-delay", default=0.0, type=click.FloatRange(0), help="Simulated seconds of cold start."
)
@click.option("--wake-up-latency", default=1.0, type=click.FloatRange(0),
              help="Simulated seconds to wake from sleep level 1 (level 2: 5x).")  # fmt: skip
@click.option("--log-level", default="warning", type=click.Choice(["debug", "info", "warning", "error"]))
@click.pass_context
def sim(ctx: click.Context, /, **kw: Any) -> None:
    """Serve simulated vLLM engines (OpenAI API, /metrics, KV events, LoRA) on ports P..P+N-1.

    `flotilla sim serve` instead runs one engine from vLLM's own flags.
    """
    if ctx.invoked_subcommand is not None:
        return
    logging.basicConfig(
        level=kw["log_level"].upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    lo, _, hi = kw["output_len"].partition(":")
    try:
        base = EngineConfig(
            model=kw["model"],
            served_model_name=kw["served_model_name"],
            preset=kw["preset"],
            time_scale=kw["time_scale"],
            seed=kw["seed"],
            host=kw["host"],
            block_size=kw["block_size"],
            num_gpu_blocks=kw["num_gpu_blocks"],
            max_num_seqs=kw["max_num_seqs"],
            max_num_batched_tokens=kw["max_num_batched_tokens"],
            max_model_len=kw["max_model_len"],
            enable_prefix_caching=not kw["no_prefix_caching"],
            scheduling_policy=kw["scheduling_policy"],
            output_len_min=int(lo),
            output_len_max=int(hi or lo),
            tokenizer=kw["tokenizer"],
            chat_template=kw["chat_template"],
            kv_events=kw["kv_events"],
            kv_events_format=kw["kv_events_format"],
            enable_lora=kw["enable_lora"],
            max_loras=kw["max_loras"],
            max_cpu_loras=kw["max_cpu_loras"],
            lora_load_latency=kw["lora_load_latency"],
            lora_step_overhead=kw["lora_step_overhead"],
            lora_modules=dict(vllm_args.lora_module(v) for v in kw["lora_modules"]),
            startup_delay=kw["startup_delay"],
            wake_up_latency=kw["wake_up_latency"],
            faults=Faults(
                failure_rate=kw["failure_rate"],
                latency_spike_rate=kw["latency_spike_rate"],
                latency_spike_factor=kw["latency_spike_factor"],
                die_mid_stream_rate=kw["die_mid_stream_rate"],
            ),
        )
    except (ValidationError, ValueError) as exc:
        raise click.UsageError(str(exc)) from exc
    configs = fleet_configs(base, kw["engines"], kw["port"], kw["kv_events_port"])
    if kw["kv_events_replay_port"] is not None:
        configs = [
            c.model_copy(
                update={"kv_events_replay_endpoint": f"tcp://{c.host}:{kw['kv_events_replay_port'] + i}"}
            )
            for i, c in enumerate(configs)
        ]
    with _runner() as runner:
        runner.run(_main(configs, kw["log_level"]))


@sim.command(
    "serve",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "show_default": True},
)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def serve(argv: tuple[str, ...]) -> None:
    """Serve one simulated engine configured by vLLM's `serve` flags (unknown vLLM flags are logged).

    Binds every interface like vLLM (--host to narrow it). Simulator knobs: --sim-preset, --sim-startup-delay,
    --sim-time-scale, --sim-num-gpu-blocks.
    """
    try:
        parsed = vllm_args.parse(argv)
    except vllm_args.VllmArgsError as exc:
        raise click.UsageError(str(exc)) from exc
    level = parsed.log_level if parsed.log_level in ("debug", "info", "warning", "error") else "info"
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log = logging.getLogger("engine_sim")
    if parsed.no_effect:
        log.info("vLLM flags accepted with no effect in the simulator: %s", " ".join(parsed.no_effect))
    if parsed.unknown:
        log.warning("unknown flags accepted and ignored: %s", " ".join(parsed.unknown))
    config = parsed.config
    log.info(
        "simulating vLLM: model=%s served-model-name=%s host=%s port=%d preset=%s",
        config.model, config.name, config.host, config.port, config.preset,
    )  # fmt: skip
    with _runner() as runner:
        runner.run(_main([config], level))


def _runner() -> asyncio.Runner:
    try:
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.Runner()


async def _main(configs: list[EngineConfig], log_level: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve_engines(configs, log_level=log_level) as running:
        for r in running:
            extra = f" kv-events {r.engine.config.kv_events_endpoint}" if r.engine.config.kv_events else ""
            print(
                f"engine {r.engine.config.engine_index}: {r.url} model={r.engine.config.name}{extra}",
                flush=True,
            )
        print("ready", flush=True)
        await stop.wait()
    sys.stdout.flush()
