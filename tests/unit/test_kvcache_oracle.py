"""The hit-rate oracle: vLLM's counting rules on tiny hand-checked traces."""

from __future__ import annotations

import pytest

from kvcache import infinite_cache_hits

B = 4
SYS = list(range(100, 108))  # two shared blocks


@pytest.mark.parametrize(
    ("prompts", "hit_tokens", "prompt_tokens"),
    [
        pytest.param([], 0, 0, id="empty-trace"),
        pytest.param([[*SYS, 1, 2, 3]], 0, 11, id="cold"),
        pytest.param([[*SYS, 1, 2, 3], [*SYS, 4, 5, 6]], 8, 22, id="shared-system-prompt"),
        pytest.param([SYS, SYS], 4, 16, id="full-hit-capped-at-(P-1)//B*B"),
        pytest.param([[*SYS, 1, 2, 3, 4], [9, 9, 9, 9, *SYS]], 0, 24, id="prefix-only-not-substring"),
        pytest.param([[1, 2, 3]], 0, 3, id="shorter-than-a-block"),
    ],
)
def test_infinite_cache(prompts: list[list[int]], hit_tokens: int, prompt_tokens: int) -> None:
    result = infinite_cache_hits(prompts, block_size=B)
    assert (result.hit_tokens, result.prompt_tokens) == (hit_tokens, prompt_tokens)
    assert result.hit_rate == (hit_tokens / prompt_tokens if prompt_tokens else 0.0)


def test_capacity_bounded_lru_loses_what_an_infinite_cache_keeps() -> None:
    a, b = [*list(range(8)), 0], [*list(range(50, 58)), 0]
    trace = [a, b, a]
    assert infinite_cache_hits(trace, block_size=B).hit_tokens == 8
    assert infinite_cache_hits(trace, block_size=B, capacity=4).hit_tokens == 8
    # room for 3 blocks: b evicted a's tail block first, a's first block survives
    assert infinite_cache_hits(trace, block_size=B, capacity=3).hit_tokens == 4
    assert infinite_cache_hits(trace, block_size=B, capacity=2).hit_tokens == 0
    with pytest.raises(ValueError, match="positive"):
        infinite_cache_hits(trace, capacity=0)
