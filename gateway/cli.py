"""``flotilla gateway``: run the gateway with uvicorn (uvloop + httptools, no access log: we log per request)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import click


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def _settings_errors(exc: Any) -> str:
    """A pydantic ``ValidationError`` of the settings as one line: ``field: message; ...``."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg'].removeprefix('Value error, ')}"
        for e in exc.errors()
    )


@click.command("gateway")
@click.option("--engine", "engines", multiple=True, help="Engine base URL (repeatable): standalone mode.")
@click.option("--kv-events", multiple=True, help="KV-event ZMQ URL of the --engine at the same position.")
@click.option(
    "--engines-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML list of engines.",
)
@click.option("--kubernetes", is_flag=True, help="Discover engine pods by the flotilla.dev labels.")
@click.option("--namespace", help="Namespace to watch (default: all).")
@click.option("--kubeconfig", help="Kubeconfig file (default: in-cluster config).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--strategy", "default_profile", help="Default routing profile (e.g. default, round-robin, prefix-cache)."
)
@click.option("--prefix-mode", type=click.Choice(["approximate", "precise"]))
@click.option(
    "--prefix-hash",
    type=click.Choice(["chars", "tokens"]),
    help="Cut prefix blocks from the prompt's text (chars: no tokenizer, token counts estimated) or from token "
    "ids (tokens). Default: chars in approximate mode, tokens in precise mode (which needs them).",
)
@click.option(
    "--routing-plan",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="`flotilla optimize --json` output: route each request size to the GPU type the plan gave it "
    "(engines' GPU types from --engines-file gpu_type; Kubernetes mode reads ModelGroups instead).",
)
@click.option("--block-size", type=int, help="Engines' KV block size (default 16).")
@click.option(
    "--tokenizer",
    help="The engines' tokenizer, as vLLM's --tokenizer: a model directory or its tokenizer.json "
    "(default: Flotilla's synthetic tokenizer, as engine_sim's).",
)
@click.option("--chat-template", help="As vLLM's --chat-template: a template file or the template itself.")
@click.option("--redis-url", help="Redis URL: the prefix index and rate limits are shared through it.")
@click.option("--shared", is_flag=True, hidden=True, help="Kept for compatibility: --redis-url alone shares.")
@click.option("--transport", type=click.Choice(["aiohttp", "httpx"]))
@click.option("--api-keys-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--rpm", "rpm_limit", type=int, help="Default requests per minute per key.")
@click.option("--tpm", "tpm_limit", type=int, help="Default tokens per minute per key.")
@click.option(
    "--hold-timeout",
    type=click.FloatRange(min=0),
    help="Seconds a request for a declared model with no ready endpoint waits for one (default 30).",
)
@click.option("--log-json/--log-text", default=None)
def gateway(**options: Any) -> None:
    """Run the OpenAI-compatible, prefix- and load-aware gateway. Other settings: FLOTILLA_GATEWAY_* env vars."""
    import uvicorn
    from pydantic import ValidationError

    from gateway.app import create_app
    from gateway.server import server_config
    from gateway.settings import GatewaySettings

    shared = options.pop("shared")
    values = {k: v for k, v in options.items() if v not in (None, ())}
    for name in ("engines", "kv_events"):
        if name in values:
            values[name] = list(values[name])
    if shared and not values.get("redis_url"):
        raise click.UsageError("--shared needs --redis-url")
    try:
        settings = GatewaySettings(**values)
        app = create_app(settings)
    except ValidationError as exc:  # one line per bad setting, not pydantic's three
        raise click.UsageError(_settings_errors(exc)) from exc
    except (ValueError, OSError, RuntimeError) as exc:  # bad settings, a missing tokenizer file or package
        raise click.UsageError(str(exc)) from exc
    if not _loopback(settings.host) and not (settings.api_keys or settings.api_keys_file):
        click.echo(
            f"WARNING: the gateway listens on {settings.host} with NO API KEYS: anyone who can reach it can use "
            "every model. Set --api-keys-file (or FLOTILLA_GATEWAY_API_KEYS) or bind 127.0.0.1.",
            err=True,
        )
    uvicorn.Server(server_config(app, settings)).run()
