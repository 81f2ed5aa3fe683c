"""The roofline step-time model (reference/simulator.md §3).

``step = c_cpu + max(T_lin(N), N / prefill_tps) + lm_head + Σctx · kv_read + pairs · attn``

* ``N`` = tokens in the step: one per decoding sequence plus the prefill chunk tokens. Below a few hundred
  tokens the linear layers are memory-bound (weight reads dominate, ``T_lin`` is nearly flat, from Vidur's
  A100 profile); above that they are compute-bound at the saturated prefill throughput.
* ``Σctx`` = context tokens every scheduled sequence attends over (decode attention is a KV read).
* ``pairs`` = query × key pairs of the prefill chunks (prefill attention is quadratic in prompt length).

Why a step model and not per-request delays: continuous batching couples requests. A long prefill chunk slows
every decode in its step (ITL spikes), a larger batch slows every token, and queueing emerges from the
scheduler instead of being drawn from a distribution. That coupling is what routing and autoscaling react to.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from engine_sim.profile import LatencyProfile


@dataclass(slots=True)
class StepShape:
    """What one engine step computes."""

    decode_tokens: int = 0
    prefill_tokens: int = 0
    #: Σ context length (tokens already in KV + new ones) over all scheduled sequences
    context_tokens: int = 0
    #: Σ over prefill chunks of chunk_len × (computed_before + chunk_len / 2)
    attention_pairs: float = 0.0

    @property
    def tokens(self) -> int:
        return self.decode_tokens + self.prefill_tokens


class LatencyModel:
    """Step time in simulated seconds for a :class:`StepShape` under one :class:`LatencyProfile`."""

    def __init__(self, profile: LatencyProfile) -> None:
        self.profile = profile
        self._xs = [n for n, _ in profile.linear_points]
        self._ys = [t for _, t in profile.linear_points]

    def linear(self, tokens: int) -> float:
        """Linear-layer time for ``tokens`` in one step: interpolated profile, floored by compute."""
        xs, ys = self._xs, self._ys
        if tokens <= xs[0]:
            mem = ys[0]
        elif tokens >= xs[-1]:
            mem = ys[-1]
        else:
            i = bisect.bisect_left(xs, tokens)
            x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
            mem = y0 + (y1 - y0) * (tokens - x0) / (x1 - x0)
        return max(mem, tokens / self.profile.prefill_tokens_per_s)

    def step_time(self, shape: StepShape) -> float:
        if shape.tokens == 0:
            return 0.0
        p = self.profile
        return (
            p.cpu_overhead
            + self.linear(shape.tokens)
            + p.lm_head
            + shape.context_tokens * p.kv_read_per_token
            + shape.attention_pairs * p.attn_per_pair
        )
