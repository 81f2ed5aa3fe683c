"""The ``flotilla`` command line: one group whose subcommands live in their components.

This is the one place in the core allowed to import components, and it does so lazily: ``flotilla sim`` does
not import the gateway or Kubernetes client, so every subcommand starts fast and a missing optional dependency
of one component never breaks another.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from flotilla import __version__

#: subcommand name -> "module:attribute" of a click command (one explicit registry)
SUBCOMMANDS: dict[str, str] = {
    "sim": "engine_sim.cli:sim",
    "gateway": "gateway.cli:gateway",
    "operator": "flotilla_operator.cli:operator",
    "crds": "flotilla_operator.cli:crds",
    "up": "flotilla.cli.up:up",
    "bench": "bench.cli:bench",
    "profile": "flotilla.cli.optimize:profile",
    "optimize": "flotilla.cli.optimize:optimize",
}

HELP: dict[str, str] = {
    "sim": "Serve simulated vLLM engines (OpenAI API, metrics, KV events, LoRA).",
    "gateway": "Run the OpenAI-compatible, prefix- and load-aware gateway.",
    "operator": "Run the Kubernetes operator (ModelDeployment, LoRAAdapter, ModelAutoscaler).",
    "crds": "Print the CRD manifests generated from Flotilla's models.",
    "up": "Start simulated engines and the gateway locally (no cluster needed).",
    "bench": "Benchmark Flotilla's routing against peers on a simulated fleet.",
    "profile": "Measure a GPU type's highest request rate within an SLO per request size.",
    "optimize": "The cheapest mix of GPU types for a workload and an SLO (Mélange).",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise click.ClickException(f"'flotilla {cmd_name}' is not available: {exc}") from exc
        command: Any = getattr(module, attr)
        if not isinstance(command, click.Command):  # pragma: no cover - programming error
            raise click.ClickException(f"{target} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help lists commands without importing them.
        with formatter.section("Commands"):
            formatter.write_dl([(name, HELP.get(name, "")) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flotilla")
def cli() -> None:
    """Flotilla: an open control plane for serving LLMs on Kubernetes."""


def main() -> None:
    cli()
