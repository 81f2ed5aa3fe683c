"""Request-size buckets: the contract between the gateway that counts request sizes and the GPU optimizer.

The optimizer (Mélange) needs the workload as a 2-D histogram: request rate per (prompt tokens, output tokens)
bucket. The gateway sees both numbers for every request it proxies (the engine's ``usage``), so it counts
them per model in one Prometheus counter; the optimizer scrapes it twice and divides the difference by the
window. Neither side imports the other: both use the bucket rule and the parser from here.

- ``flotilla_gateway_request_sizes_total{model, input_le, output_le}`` — finished requests whose prompt had at
  most ``input_le`` tokens (and more than the previous bound) and whose output had at most ``output_le``.

A bucket is named by its *upper* bound, as in Prometheus histograms; the last bound of each axis also takes
everything larger (``+Inf`` would make the profile's representative size undefined). Profiling runs each
bucket at its upper bound, so a request of any size in the bucket is served at least as well as profiled.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Final

from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "DEFAULT_INPUT_BOUNDS",
    "DEFAULT_OUTPUT_BOUNDS",
    "SIZES_METRIC",
    "bucket_index",
    "parse_sizes",
]

SIZES_METRIC: Final = "flotilla_gateway_request_sizes_total"

#: prompt-token bucket upper bounds (Mélange's example uses 1–25, 25–100, 100–250, …; coarser here)
DEFAULT_INPUT_BOUNDS: Final = (64, 256, 1024, 4096, 8192)
#: output-token bucket upper bounds
DEFAULT_OUTPUT_BOUNDS: Final = (64, 256, 1024)


def bucket_index(bounds: Sequence[int], tokens: int) -> int:
    """Index of the first bound ``>= tokens``; sizes beyond the last bound fall into the last bucket."""
    return min(bisect.bisect_left(bounds, tokens), len(bounds) - 1)


def parse_sizes(text: str, model: str) -> dict[tuple[int, int], float]:
    """``{(input_le, output_le): count}`` for ``model`` from a gateway's Prometheus text exposition."""
    out: dict[tuple[int, int], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != SIZES_METRIC or sample.labels.get("model") != model:
                continue
            try:
                key = (int(sample.labels["input_le"]), int(sample.labels["output_le"]))
            except (KeyError, ValueError):
                continue
            out[key] = out.get(key, 0.0) + sample.value
    return out
