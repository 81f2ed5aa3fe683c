"""``flotilla up``: simulated engines and the gateway in one process — Flotilla working within a minute.

Everything runs in one asyncio loop: N engine_sim servers (or, with ``--engine``, real vLLM servers elsewhere)
and the gateway with its embedded in-memory prefix index (``--redis-url`` switches to the shared one). No
cluster, no Redis, no GPU. The command prints the OpenAI base URL with copy-pasteable examples, keeps one
status line up to date, and on Ctrl-C / SIGTERM stops the gateway first (so no request is cut mid-route),
then the engines, and exits 0.

This module only wires components together through their public APIs (``engine_sim.serve_engines``,
``gateway.app.create_app``); it holds no logic of its own worth testing apart from that wiring.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import socket
import sys
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import click
import httpx

DEFAULT_MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def _embedded_server(app: Any) -> Any:
    """A uvicorn server that leaves signal handling to us (several servers share one loop)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield

    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=3
    )
    return Server(config)


@dataclass(frozen=True)
class UpOptions:
    engines: int
    engine_urls: tuple[str, ...]
    host: str
    port: int
    model: str
    preset: str
    time_scale: float
    num_gpu_blocks: int | None
    redis_url: str | None
    strategy: str | None
    status: bool
    #: ``--lora NAME=PATH[:REPLICAS]`` adapters, placed by ``up_lora`` (LoRA is on when any is given)
    loras: tuple[Any, ...] = ()
    max_loras: int = 2
    #: --autoscale: engines follow load between min_engines and max_engines (flotilla.cli.local_scaler)
    autoscale: bool = False
    min_engines: int = 0
    max_engines: int = 4
    policy: str = "kpa"
    #: simulated seconds from an engine's start to ready (cold start), autoscale mode
    startup_delay: float = 0.0
    #: write the scaler's timeline and engine lifetimes here as JSON on exit
    record: Path | None = None
    #: the model's tokenizer (a directory or tokenizer.json) and chat template, for the simulated engines and
    #: the gateway alike (None: Flotilla's synthetic tokenizer)
    tokenizer: str | None = None
    chat_template: str | None = None
    #: further EngineConfig fields for the simulated engines (e.g. max_num_seqs)
    engine_extra: dict[str, Any] = field(default_factory=dict)


def bind(host: str, port: int) -> socket.socket:
    """Bind the gateway's socket up front so 'port in use' is a one-line error before anything starts."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise click.ClickException(
            f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port"
        ) from exc
    return sock


def banner(base_url: str, model: str, what: str) -> str:
    return f"""
Flotilla is up: {what}.

  OpenAI base URL:  {base_url}
  model:            {model}

Python (pip install openai):

  from openai import OpenAI
  client = OpenAI(base_url="{base_url}", api_key="unused")
  reply = client.chat.completions.create(
      model="{model}", messages=[{{"role": "user", "content": "Hello, Flotilla!"}}]
  )
  print(reply.choices[0].message.content)

curl:

  curl {base_url}/chat/completions -H 'Content-Type: application/json' \\
    -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello, Flotilla!"}}]}}'

Per-request routing strategy: add the header 'x-routing-strategy: prefix-cache' (or round-robin, …).
Press Ctrl-C to stop.
"""


def status_line(stats: Any) -> str:
    endpoints = stats.endpoints
    healthy = sum(1 for e in endpoints if e.healthy)
    in_flight = sum(e.in_flight for e in endpoints)
    hit = stats.engine_prefix_hit_ratio
    hit_text = "–" if hit is None or math.isnan(hit) else f"{hit:.0%}"
    return (
        f"engines {healthy}/{len(endpoints)} healthy · requests {stats.requests} ({stats.errors} errors) · "
        f"in flight {in_flight} · prefix-cache hit rate {hit_text}"
    )


def scaler_line(status: Any) -> str:
    starting = f" (+{status.starting} starting)" if status.starting else ""
    return f"replicas {status.replicas}{starting} · desired {status.desired} · panic {'yes' if status.panic else 'no'} · "


async def _status_loop(app: Any, stream: TextIO, stop: asyncio.Event, scaler: Any = None) -> None:
    from gateway import live_stats

    tty = stream.isatty()
    last = ""
    while not stop.is_set():
        line = (scaler_line(scaler.status()) if scaler is not None else "") + status_line(live_stats(app))
        if tty:
            stream.write("\r\033[K" + line)
            stream.flush()
        elif line != last:
            stream.write(line + "\n")
            stream.flush()
        last = line
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)
    if tty:
        stream.write("\n")


def _engine_config(opts: UpOptions) -> Any:
    from engine_sim import EngineConfig

    values: dict[str, Any] = {"model": opts.model, "preset": opts.preset, "host": "127.0.0.1",
                              "time_scale": opts.time_scale, **opts.engine_extra}  # fmt: skip
    if opts.num_gpu_blocks is not None:
        values["num_gpu_blocks"] = opts.num_gpu_blocks
    if opts.tokenizer is not None:
        values.update(tokenizer=opts.tokenizer, chat_template=opts.chat_template)
    if opts.autoscale:
        values["startup_delay"] = opts.startup_delay
    if opts.loras:
        values.update(enable_lora=True, max_loras=opts.max_loras)
    try:
        return EngineConfig(**values)
    except ValueError as exc:
        raise click.ClickException(f"bad engine options: {exc}") from exc


@contextlib.asynccontextmanager
async def _engines(opts: UpOptions) -> AsyncIterator[list[str]]:
    if opts.engine_urls:
        yield [u.rstrip("/") for u in opts.engine_urls]
        return
    if opts.autoscale:
        yield []  # the local scaler starts them
        return
    from engine_sim import fleet_configs, serve_engines

    # port 0: every engine gets its own free loopback port
    configs = [
        c.model_copy(update={"port": 0}) for c in fleet_configs(_engine_config(opts), opts.engines, 0, None)
    ]
    async with serve_engines(configs) as running:
        yield [r.url for r in running]


async def _first_model(base_url: str, fallback: str) -> str:
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        for _ in range(50):
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, IndexError):
                data = (await client.get(base_url + "/models")).json()["data"]
                if data:
                    return str(data[0]["id"])
            await asyncio.sleep(0.2)
    return fallback


def _build_scaler(opts: UpOptions, app: Any, policy: Any) -> Any:
    from flotilla.cli.local_scaler import LocalScaler
    from flotilla.cli.local_wiring import GatewayEndpoints, SimEngines, make_policy

    try:
        chosen = (
            policy if policy is not None else make_policy(opts.policy, opts.min_engines, opts.max_engines)
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    return LocalScaler(
        chosen, SimEngines(_engine_config(opts)), GatewayEndpoints(app.state.gateway, opts.model),
        min_engines=opts.min_engines, max_engines=opts.max_engines, time_scale=opts.time_scale,
    )  # fmt: skip


async def run(
    opts: UpOptions, *, out: TextIO, err: TextIO, policy: Any = None, initial: int | None = None
) -> None:
    """Serve until SIGINT/SIGTERM. ``policy`` overrides ``opts.policy`` (the benchmark's baselines);
    ``initial`` = engines started warm before the scaler's first tick (default ``min_engines``)."""
    from flotilla.cli import up_lora
    from gateway import GatewaySettings, create_app

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sock = bind(opts.host, opts.port)
    port = sock.getsockname()[1]
    host = f"[{opts.host}]" if ":" in opts.host else opts.host
    base_url = f"http://{host}:{port}/v1"
    try:
        async with _engines(opts) as urls, up_lora.placed(urls, opts.loras, opts.max_loras) as lora:
            values: dict[str, Any] = {"engines": urls, "host": opts.host, "port": port,
                                      "log_level": "WARNING", "log_json": False}  # fmt: skip
            if opts.redis_url:
                values.update(index_backend="redis", redis_url=opts.redis_url)
            if opts.strategy:
                values["default_profile"] = opts.strategy
            if opts.tokenizer is not None:
                values.update(tokenizer=opts.tokenizer, chat_template=opts.chat_template)
            if opts.autoscale:
                # a request at zero engines is held through a whole cold start, with room to spare
                values["hold_timeout"] = max(30.0, 2 * opts.startup_delay * opts.time_scale)
            try:
                app = create_app(GatewaySettings(**values))
            except (ValueError, OSError, RuntimeError) as exc:  # bad settings, a missing file or package
                raise click.ClickException(f"bad gateway options: {exc}") from exc
            if opts.loras:  # declared, so a request racing the first /v1/models scrape is held, not 404
                app.state.gateway.fleet.catalog.declare("up", up_lora.catalog(opts.loras, opts.model))
            server = _embedded_server(app)
            task = asyncio.create_task(server.serve(sockets=[sock]), name="gateway")
            while not server.started:
                if task.done():
                    task.result()
                    raise click.ClickException("the gateway exited during startup")
                await asyncio.sleep(0.01)
            scaler = _build_scaler(opts, app, policy) if opts.autoscale else None
            scaler_stop = asyncio.Event()
            scaling = None
            if scaler is not None:
                await scaler.prestart(opts.min_engines if initial is None else initial)
                scaling = asyncio.create_task(scaler.run(scaler_stop), name="local-scaler")
            what = (
                f"gateway in front of {len(urls)} engine(s) at {', '.join(urls)}"
                if opts.engine_urls
                else f"{opts.min_engines}–{opts.max_engines} simulated engines ({opts.preset}, {opts.policy}"
                f" autoscaling, {opts.startup_delay:g} s cold start) behind the gateway"
                if opts.autoscale
                else f"{len(urls)} simulated engines ({opts.preset}) behind the gateway"
            )
            model = opts.model if opts.autoscale else await _first_model(base_url, opts.model)
            text = banner(base_url, model, what)
            if lora is not None:
                text += "LoRA adapters (use the name as 'model'):\n" + up_lora.describe(lora, urls) + "\n"
            out.write(text + "\n")
            out.flush()
            status = asyncio.create_task(_status_loop(app, err, stop, scaler)) if opts.status else None
            await stop.wait()
            if status is not None:
                await status
            err.write("stopping…\n")
            server.should_exit = True
            await task
            if scaling is not None and scaler is not None:
                scaler_stop.set()
                await scaling
                if opts.record is not None:
                    opts.record.write_bytes(scaler.record())
    finally:
        sock.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    err.write("stopped\n")
    err.flush()


@click.command("up")
@click.option(
    "--engines",
    "-n",
    default=4,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Number of simulated engines.",
)
@click.option(
    "--engine",
    "engine_urls",
    multiple=True,
    metavar="URL",
    help="Use this real vLLM server instead of simulated engines (repeatable).",
)
@click.option(
    "--port",
    "-p",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Gateway port (0 = any free port).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Gateway bind address.")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Model the simulated engines serve.")
@click.option(
    "--preset",
    default="a100-llama3-8b",
    show_default=True,
    help="Simulated GPU latency preset (see `flotilla sim --help`).",
)
@click.option(
    "--time-scale",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Wall seconds per simulated second for the simulated engines.",
)
@click.option(
    "--num-gpu-blocks", type=click.IntRange(2), default=None, help="KV blocks per simulated engine."
)
@click.option(
    "--redis-url", default=None, help="Use a shared Redis prefix index instead of the embedded one."
)
@click.option("--strategy", default=None, help="Default routing strategy (profile) of the gateway.")
@click.option(
    "--tokenizer",
    default=None,
    help="The model's tokenizer, as vLLM's --tokenizer: a model directory or its tokenizer.json, used by the "
    "simulated engines and the gateway alike (default: Flotilla's synthetic tokenizer). Needs the hf extra.",
)
@click.option(
    "--chat-template", default=None, help="As vLLM's --chat-template: a template file or the template itself."
)
@click.option("--status/--no-status", default=True, show_default=True, help="Live status line on stderr.")
@click.option(
    "--lora",
    "loras",
    multiple=True,
    metavar="NAME=PATH[:REPLICAS]",
    help="Serve a LoRA adapter on REPLICAS engines (default 1), placed like the operator does (repeatable).",
)
@click.option(
    "--max-loras", default=2, show_default=True, type=click.IntRange(1, 256), help="LoRA slots per engine."
)
@click.option(
    "--autoscale", is_flag=True, help="Start and stop simulated engines to follow load (no cluster needed)."
)
@click.option(
    "--min-engines",
    default=0,
    show_default=True,
    type=click.IntRange(0, 64),
    help="Autoscale: fewest engines.",
)
@click.option(
    "--max-engines", default=4, show_default=True, type=click.IntRange(1, 64), help="Autoscale: most engines."
)
@click.option(
    "--policy", default="kpa", show_default=True, help="Autoscale: the autoscaler's algorithm (kpa or apa)."
)
@click.option(
    "--startup-delay",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Autoscale: simulated seconds from an engine's start to ready (its cold start).",
)
@click.option(
    "--record",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Autoscale: write the scaler's timeline and engine lifetimes here as JSON on exit.",
)
def up(
    engines: int, engine_urls: tuple[str, ...], port: int, host: str, model: str, preset: str,
    time_scale: float, num_gpu_blocks: int | None, redis_url: str | None, strategy: str | None,
    tokenizer: str | None, chat_template: str | None, status: bool, loras: tuple[str, ...], max_loras: int,
    autoscale: bool, min_engines: int, max_engines: int, policy: str, startup_delay: float, record: Path | None,
) -> None:  # fmt: skip
    """Start simulated engines and the gateway locally (no cluster needed); Ctrl-C stops everything."""
    for url in engine_urls:
        if not url.startswith(("http://", "https://")):
            raise click.BadParameter(f"{url!r} is not an http(s) URL", param_hint="--engine")
    if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise click.BadParameter(f"{redis_url!r} is not a redis:// URL", param_hint="--redis-url")
    if not engine_urls:
        from engine_sim import PRESETS

        if preset not in PRESETS:
            raise click.BadParameter(
                f"{preset!r}; choose from {', '.join(sorted(PRESETS))}", param_hint="--preset"
            )
    if host not in ("127.0.0.1", "::1", "localhost"):
        click.echo(
            f"warning: listening on {host}, not loopback: anyone who can reach it can use it", err=True
        )
    if chat_template is not None and tokenizer is None:
        raise click.UsageError(
            "--chat-template needs --tokenizer (the synthetic tokenizer has its own layout)"
        )
    if tokenizer is not None:  # load it once here so a bad file is a one-line error, not a crash mid-start
        from flotilla.tokenizer import load_tokenizer

        try:
            load_tokenizer(tokenizer, chat_template=chat_template)
        except (ValueError, OSError, RuntimeError, ImportError) as exc:
            raise click.BadParameter(str(exc), param_hint="--tokenizer") from exc
    if autoscale and engine_urls:
        raise click.UsageError("--autoscale starts simulated engines; it cannot be combined with --engine")
    if autoscale and loras:
        raise click.UsageError(
            "--lora places adapters on a fixed set of engines; it cannot be combined with --autoscale"
        )
    if min_engines > max_engines:
        raise click.BadParameter(f"{min_engines} > --max-engines {max_engines}", param_hint="--min-engines")
    if autoscale:
        from autoscaler import POLICIES

        if policy.upper() not in POLICIES:
            raise click.BadParameter(
                f"{policy!r}; choose from {', '.join(p.lower() for p in POLICIES)}", param_hint="--policy"
            )
    from flotilla.cli.up_lora import parse_lora

    opts = UpOptions(engines, engine_urls, host, port, model, preset, time_scale, num_gpu_blocks, redis_url,
                     strategy, status, loras=tuple(parse_lora(v) for v in loras), max_loras=max_loras,
                     autoscale=autoscale, min_engines=min_engines, max_engines=max_engines, policy=policy,
                     startup_delay=startup_delay, record=record, tokenizer=tokenizer,
                     chat_template=chat_template)  # fmt: skip
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        runner = asyncio.Runner()
    with runner:
        runner.run(run(opts, out=sys.stdout, err=sys.stderr))
