"""Hit-rate oracles for benchmarks: what a single cache would reach on a trace (routing.md §3).

No router can beat :func:`infinite_cache_hits` (one cache of unlimited size sees every prompt); the bounded
variant (``capacity`` blocks, LRU) shows what is reachable with the cluster's real KV memory. Hits count like
vLLM's ``prefix_cache_hits``: only the leading chain of full blocks already cached, and at most
⌊(P−1)/B⌋·B tokens, because vLLM recomputes the last prompt token even on a full hit.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kvcache.hashing import DEFAULT_BLOCK_SIZE, block_hashes


@dataclass(frozen=True, slots=True)
class OracleResult:
    hit_tokens: int
    prompt_tokens: int

    @property
    def hit_rate(self) -> float:
        return self.hit_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def infinite_cache_hits(
    prompts: Iterable[Sequence[int]], *, block_size: int = DEFAULT_BLOCK_SIZE, capacity: int | None = None
) -> OracleResult:
    """Replay ``prompts`` in order through one cache; ``capacity`` (blocks) makes it an LRU cache.

    Blocks of a prompt are touched tail first, like vLLM frees them, so LRU eviction eats chains from the tail.
    """
    if capacity is not None and capacity <= 0:
        raise ValueError("capacity must be a positive number of blocks")
    cache: OrderedDict[int, None] = OrderedDict()
    hit_tokens = prompt_tokens = 0
    for tokens in prompts:
        hashes = block_hashes(tokens, block_size=block_size)
        hit = 0
        for h in hashes:
            if h not in cache:
                break
            hit += 1
        prompt_tokens += len(tokens)
        hit_tokens += min(hit * block_size, (len(tokens) - 1) // block_size * block_size) if tokens else 0
        for h in reversed(hashes):
            cache[h] = None
            cache.move_to_end(h)
        if capacity is not None:
            while len(cache) > capacity:
                cache.popitem(last=False)
    return OracleResult(hit_tokens, prompt_tokens)
