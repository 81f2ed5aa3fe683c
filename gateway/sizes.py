"""The per-model request-size histogram the GPU optimizer reads (contract: :mod:`flotilla.sizes`).

Mélange plans from the workload's 2-D histogram of (prompt tokens, output tokens). The gateway is the one
place that sees every request of a model, so it counts each successful one into
``flotilla_gateway_request_sizes_total{model, input_le, output_le}``; ``flotilla optimize --workload-from``
scrapes it twice and divides by the window.

* prompt tokens: the gateway's own count (the one rate limiting and routing use);
* output tokens: the engine's ``usage.total_tokens`` minus that prompt count. The hook asks the proxy to read
  ``usage`` (one JSON parse of a non-streamed body); a stream is counted only when the client asked for its
  usage chunk (``stream_options.include_usage``), otherwise its output length is unknown and it is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter

from flotilla.sizes import DEFAULT_INPUT_BOUNDS, DEFAULT_OUTPUT_BOUNDS, SIZES_METRIC, bucket_index
from gateway.lifecycle import RequestContext
from gateway.telemetry import Children


class SizeHook:
    """A :class:`gateway.lifecycle.RequestHook` counting finished requests per (model, size bucket)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        input_bounds: Sequence[int] = DEFAULT_INPUT_BOUNDS,
        output_bounds: Sequence[int] = DEFAULT_OUTPUT_BOUNDS,
    ) -> None:
        self.input_bounds = tuple(input_bounds)
        self.output_bounds = tuple(output_bounds)
        self.sizes = Counter(
            SIZES_METRIC.removesuffix("_total"),
            "Successful requests by prompt-token and output-token bucket (upper bounds; the last takes larger)",
            ["model", "input_le", "output_le"],
            registry=registry,
        )
        self._sizes = Children(self.sizes)

    async def on_routed(self, ctx: RequestContext) -> None:
        if ctx.attempt is not None:
            ctx.attempt.want_usage = True

    def on_finished(self, ctx: RequestContext) -> None:
        a = ctx.attempt
        if a is None or a.status != 200 or a.usage_tokens is None:
            return
        prompt = ctx.parsed.prompt_tokens
        output = max(0, a.usage_tokens - prompt)
        i = bucket_index(self.input_bounds, prompt)
        j = bucket_index(self.output_bounds, output)
        self._sizes(ctx.model, str(self.input_bounds[i]), str(self.output_bounds[j])).inc()
