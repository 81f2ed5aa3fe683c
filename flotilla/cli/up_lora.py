"""``flotilla up --lora NAME=PATH[:REPLICAS]``: LoRA adapters on the simulated engines, placed like in a cluster.

The adapters are placed by the same code the operator runs (``lora_manager.converging``: observe each engine's
``/v1/models``, plan with the stable placement, load/unload through vLLM's runtime API), so what a user sees
locally — which engines hold which adapter, what happens with more replicas than slots — is what the cluster
does. A background task repeats the pass every few seconds, so an engine that restarted (``--engine`` URLs
run by someone else) gets its adapters back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import click

from lora_manager import EngineClient, EnginePod, Outcome, Retry, Wanted, converge

log = logging.getLogger("flotilla.up")

#: seconds between placement passes after the first
RESYNC = 5.0


@dataclass(frozen=True)
class LoraOption:
    name: str
    path: str
    replicas: int


def parse_lora(value: str) -> LoraOption:
    """``NAME=PATH[:REPLICAS]``; PATH may contain ``:`` (``s3://…``), so only a numeric tail is REPLICAS."""
    name, sep, rest = value.partition("=")
    if not sep or not name or not rest:
        raise click.BadParameter(f"{value!r} is not NAME=PATH[:REPLICAS]", param_hint="--lora")
    path, replicas = rest, 1
    head, colon, tail = rest.rpartition(":")
    if colon and tail.isdigit():
        path, replicas = head, int(tail)
    if replicas < 1 or not path:
        raise click.BadParameter(f"{value!r}: REPLICAS must be >= 1 and PATH not empty", param_hint="--lora")
    return LoraOption(name, path, replicas)


def catalog(options: Sequence[LoraOption], base_model: str) -> dict[str, str | None]:
    """What ``gateway.fleet.catalog.declare("up", …)`` gets: every adapter with its base model."""
    return {o.name: base_model for o in options}


def describe(outcome: Outcome, urls: Sequence[str]) -> str:
    """One line per adapter for the banner: where it is loaded, and what is missing."""
    names = {f"engine-{i}": url for i, url in enumerate(urls)}
    lines = []
    for adapter, pods in sorted(outcome.loaded.items()):
        where = ", ".join(names[p] for p in sorted(pods)) or "nowhere"
        line = f"  {adapter}: on {where}"
        short = outcome.plan.shortfall.get(adapter)
        if short:
            line += f" ({short} replica(s) short: no free LoRA slot; raise --max-loras or add --engines)"
        errors = outcome.errors.get(adapter)
        if errors:
            line += f" (error: {errors[0]})"
        lines.append(line)
    return "\n".join(lines)


async def _converge(client: EngineClient, urls: Sequence[str], wanted: list[Wanted], slots: int) -> Outcome:
    pods = [EnginePod(f"engine-{i}", url, slots) for i, url in enumerate(urls)]
    return await converge(client, pods, wanted)


@contextlib.asynccontextmanager
async def placed(
    urls: Sequence[str], options: Sequence[LoraOption], slots: int
) -> AsyncIterator[Outcome | None]:
    """Place ``options`` on the engines at ``urls``, keep them placed while the context is open."""
    if not options:
        yield None
        return
    wanted = [Wanted(o.name, o.path, o.replicas) for o in options]
    async with EngineClient(timeout=60.0, retry=Retry(attempts=3, base=0.2)) as client:
        first = await _converge(client, urls, wanted, slots)

        async def keep() -> None:
            while True:
                await asyncio.sleep(RESYNC)
                try:
                    await _converge(client, urls, wanted, slots)
                except Exception:  # a pass that fails must not end the loop; the next one retries
                    log.exception("LoRA placement pass failed")

        task = asyncio.create_task(keep(), name="lora-placement")
        try:
            yield first
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
