"""The ``ttft-cost`` formula (default profile), table-driven: cost = uncached + queued prefill + decode term."""

from __future__ import annotations

import pytest

from gateway.endpoints import Endpoint
from gateway.routing.plugins.ttft_cost import TTFTCost
from gateway.routing.types import RoutingRequest
from tests.unit.gateway.support import ep

WARM = "127.0.0.1:1"


def _request(prompt_tokens: int, matches: dict[str, int]) -> RoutingRequest:
    return RoutingRequest(
        model="m",
        prompt_tokens=prompt_tokens,
        hashes=[0] * (prompt_tokens // 16),
        max_tokens=64,
        matches=matches,
    )


# 100-token prompt = 7 blocks (ceil); the warm endpoint holds 6 of them (1 uncached); decode_weight 4 unless set
@pytest.mark.parametrize(
    ("endpoints", "matches", "weight", "expected"),
    [
        ([ep(1), ep(2)], {WARM: 6}, 4.0, [1.0, 7.0]),
        ([ep(1), ep(2)], {}, 4.0, [7.0, 7.0]),
        # requests in flight past their first byte: only the decode term, 4 per sequence
        ([ep(1, in_flight=1), ep(2)], {WARM: 6}, 4.0, [5.0, 7.0]),
        ([ep(1, in_flight=2), ep(2)], {WARM: 6}, 4.0, [9.0, 7.0]),
        # a request still prefilling (no byte yet) queues its uncached blocks, not a decode slot
        ([ep(1, in_flight=1, prefilling=1, pending_blocks=7), ep(2)], {WARM: 6}, 4.0, [8.0, 7.0]),
        # cached blocks of requests on the warm pod are not load (the old kv-cost counted them)
        ([ep(1, in_flight=1, active_blocks=11), ep(2)], {WARM: 6}, 4.0, [5.0, 7.0]),
        # scraped queue (other gateway replicas): waiting requests look like this one on that endpoint
        ([ep(1, waiting=3), ep(2, waiting=3)], {WARM: 6}, 4.0, [4.0, 28.0]),
        ([ep(1, running=2), ep(2, in_flight=1)], {WARM: 6}, 4.0, [9.0, 11.0]),
        # own counts win when the scrape is stale (lower)
        ([ep(1, in_flight=3, running=1), ep(2)], {}, 4.0, [19.0, 7.0]),
        ([ep(1, prefilling=2, in_flight=2, pending_blocks=10, waiting=1), ep(2)], {}, 4.0, [17.0, 7.0]),
        # decode_weight 0: pure prefill work
        ([ep(1, in_flight=50), ep(2)], {WARM: 6}, 0.0, [1.0, 7.0]),
    ],
    ids=[
        "warm-wins-idle",
        "cold-tie",
        "warm-one-running",
        "warm-two-running-loses",
        "pending-prefill-queued",
        "held-blocks-not-load",
        "scraped-waiting-times-uncached",
        "scraped-running",
        "own-count-over-stale-scrape",
        "pending-over-scraped-waiting",
        "weight-zero",
    ],
)
def test_ttft_cost(
    endpoints: list[Endpoint], matches: dict[str, int], weight: float, expected: list[float]
) -> None:
    assert TTFTCost(decode_weight=weight).costs(_request(100, matches), endpoints) == expected


def test_ttft_cost_scores_are_min_max_inverse_and_tie_is_neutral() -> None:
    scorer = TTFTCost()
    assert scorer.score(_request(100, {WARM: 6}), [ep(1), ep(2), ep(3)]) == [1.0, 0.0, 0.0]
    assert scorer.score(_request(100, {}), [ep(1), ep(2)]) == [1.0, 1.0]


def test_ttft_cost_rejects_negative_weight() -> None:
    with pytest.raises(ValueError, match="decode_weight"):
        TTFTCost(decode_weight=-0.5)


@pytest.mark.parametrize(
    ("prompt_tokens", "limit"),
    [(2048, 32), (1024, 16), (320, 5)],
    ids=["2k-prompt", "1k-prompt", "short-prompt"],
)
def test_warm_pod_stops_winning_after_saving_over_decode_weight(prompt_tokens: int, limit: int) -> None:
    """The anti-hotspot bound: with every request past its first byte, the pod holding a shared prompt wins only
    while it runs fewer than (saved blocks ÷ decode_weight) more sequences than a cold, idle pod."""
    scorer = TTFTCost(decode_weight=4.0)
    blocks = prompt_tokens // 16
    warm, cold = ep(1), ep(2)
    won = 0
    while True:
        costs = scorer.costs(_request(prompt_tokens, {WARM: blocks}), [warm, cold])
        if costs[0] >= costs[1]:
            break
        warm.in_flight += 1
        won += 1
        assert won <= 10_000
    assert won == limit
