"""``ttft-cost`` scorer (the default profile): the expected wait for this request's first token, in prefill
blocks (one block of 16 tokens ≈ 1.1 ms of prefill on an A100 at ~15k tokens/s).

::

    P          = ⌈prompt_tokens ÷ B⌉                                   this request's prompt blocks
    uncached_e = P − matched_e                                         blocks e would have to prefill for it
    queued_e   = max(pending_e, waiting_e × uncached_e)                prefill work ahead of it on e
    running_e  = max(in_flight_e − prefilling_e, scraped running_e)    sequences e is decoding
    cost_e     = uncached_e + queued_e + decode_weight × running_e
    score_e    = (max cost − cost_e) ÷ (max cost − min cost)           (1.0 for all when equal)

* ``pending_e``: uncached prompt blocks of this gateway's in-flight requests on e that have not yet sent a
  byte back (each counted with the match it had on e at routing time, released at the first streamed chunk,
  or at the end of a non-streaming response); ``prefilling_e`` counts those requests.
* ``waiting_e`` and ``running_e`` are the engine's scraped queue gauges (covering other gateway replicas);
  queued requests we cannot see are assumed to look like this one on e.

Why not count KV blocks held (the older ``kv-cost``): a warm pod's in-flight requests all hold the *shared,
already cached* prefix, so a block count makes the warm pod look full after one request and sprays the system
prompt over every pod. What delays a first token is prefill work that is still to be done, plus (weakly) the
decode batch it has to share steps with.

``decode_weight`` (default 4.0 blocks ≈ 4 ms per running sequence) is a policy knob calibrated on the
simulator's A100 step model (reference/simulator.md §3): a decode step is ~10 ms flat up to a batch of 16–32
and grows beyond, so a pod that saves ``S`` blocks of prefill keeps winning only while it runs fewer than
``S ÷ decode_weight`` more sequences than the others (a 2k-token shared prompt: ~30). That is the bound that
keeps a shared system prompt from piling onto one pod once the prompt's first prefill is done; before that,
the first request's pending prefill (the whole prompt) makes every cold pod as cheap as the warm one, so a
burst spreads the prompt at once. Tie (equal cost everywhere, e.g. an idle cold fleet): all scores are 1.0
and the picker breaks the tie.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.endpoints import Endpoint
from gateway.routing.types import RoutingRequest, min_max_inverse


class TTFTCost:
    name = "ttft-cost"

    def __init__(self, mode: str = "approximate", decode_weight: float = 4.0) -> None:
        if decode_weight < 0:
            raise ValueError("decode_weight must be >= 0")
        self.needs_matches: str | None = mode
        self.decode_weight = decode_weight

    def costs(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> list[float]:
        prompt_blocks = -(-request.prompt_tokens // request.block_size)
        out = []
        for e in endpoints:
            uncached = max(0, prompt_blocks - request.matches.get(e.key, 0))
            queued = float(e.pending_blocks)
            running = float(e.in_flight - e.prefilling)
            m = e.metrics
            if m is not None:
                queued = max(queued, m.waiting * uncached)
                running = max(running, m.running)
            out.append(uncached + queued + self.decode_weight * running)
        return out

    def score(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> list[float]:
        return min_max_inverse(self.costs(request, endpoints))
