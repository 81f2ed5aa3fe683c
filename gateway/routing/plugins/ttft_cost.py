"""``ttft-cost`` scorer (the default profile): the work standing between this request and its first token on
each endpoint, in prefill blocks (one 16-token block ≈ 1.1 ms of prefill on an A100 at ~15k tokens/s).

::

    P          = ⌈prompt_tokens ÷ B⌉                                   this request's prompt blocks
    uncached_e = P − matched_e                                         blocks e would have to prefill for it
    queued_e   = max(pending_e, waiting_e × uncached_e)                prefill work ahead of it on e
    running_e  = max(in_flight_e, scraped running_e)                   sequences e runs or will decode
    cost_e     = prefill_weight × uncached_e + queued_e + decode_weight × running_e
    score_e    = (max cost − cost_e) ÷ (max cost − min cost)           (1.0 for all when equal: the picker
                                                                        breaks the tie, e.g. an idle cold fleet)

* ``pending_e``: uncached prompt blocks of this gateway's in-flight requests on e that have not sent a byte
  back yet (each counted with its match on e at routing time; released at the first streamed chunk, or at the
  end of a non-streaming response). A request still prefilling also counts in ``running_e``: it will decode
  there next, so a burst that queues behind the prompt's first copy still meets the decode bound below.
* ``waiting_e`` / ``running_e`` (scraped) cover other gateway replicas; queued requests we cannot see are
  assumed to look like this one on e.

Why not KV blocks held (the older ``kv-cost``): every in-flight request on a warm pod holds the *shared, already
cached* prefix, so a block count makes the warm pod look full after one request and sprays the system prompt
over every pod, destroying reuse. What delays a first token is prefill work still to be done, and weakly the
decode batch it shares steps with.

Parameters (calibrated on the simulator's A100 step model, reference/simulator.md §3, and ``flotilla bench``):

* ``prefill_weight`` (2.0, ≥ 1): new prefill is charged twice — once for this request's own wait, once for what
  it costs the fleet (requests queued behind it on e, and the cache it evicts to store a second copy). At 1.0 a
  request arriving while the prompt's first copy is still being prefilled sees a cold pod as cheaper and copies
  it; in tuning runs of `flotilla bench` that cost ``gsp`` 75 % vs 82 % hit rate (1.0 vs 2.0).
* ``decode_weight`` (8.0 blocks per running sequence): a decode step is ~10 ms flat up to a batch of 16–32 and
  grows beyond, so a pod that saves ``S`` prompt blocks keeps winning only while it has fewer than
  ``prefill_weight × S ÷ decode_weight`` (= S ÷ 4) requests in flight more than a cold pod — ~32 for a 2k-token
  shared prompt. That bound is what keeps a shared system prompt from piling onto one pod, in a burst (the
  queued copies of the prompt add up too) as in steady state.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.endpoints import Endpoint
from gateway.routing.types import RoutingRequest, min_max_inverse


class TTFTCost:
    name = "ttft-cost"

    def __init__(
        self, mode: str = "approximate", prefill_weight: float = 2.0, decode_weight: float = 8.0
    ) -> None:
        if prefill_weight < 1:
            raise ValueError("prefill_weight must be >= 1")
        if decode_weight < 0:
            raise ValueError("decode_weight must be >= 0")
        self.needs_matches: str | None = mode
        self.prefill_weight = prefill_weight
        self.decode_weight = decode_weight

    def costs(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> list[float]:
        prompt_blocks = -(-request.prompt_tokens // request.block_size)
        out = []
        for e in endpoints:
            uncached = max(0, prompt_blocks - request.matches.get(e.key, 0))
            queued = float(e.pending_blocks)
            running = float(e.in_flight)
            m = e.metrics
            if m is not None:
                queued = max(queued, m.waiting * uncached)
                running = max(running, m.running)
            out.append(self.prefill_weight * uncached + queued + self.decode_weight * running)
        return out

    def score(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> list[float]:
        return min_max_inverse(self.costs(request, endpoints))
