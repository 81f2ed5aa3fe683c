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


# 100-token prompt = 7 blocks (ceil); the warm endpoint holds 6 of them (1 uncached). Rows use prefill_weight 1 and
# decode_weight 4 (easy arithmetic) unless they say otherwise; the defaults (2, 8) have their own rows.
@pytest.mark.parametrize(
    ("endpoints", "matches", "weight", "expected"),
    [
        ([ep(1), ep(2)], {WARM: 6}, 4.0, [1.0, 7.0]),
        ([ep(1), ep(2)], {}, 4.0, [7.0, 7.0]),
        # requests in flight past their first byte: only the decode term, 4 per sequence
        ([ep(1, in_flight=1), ep(2)], {WARM: 6}, 4.0, [5.0, 7.0]),
        ([ep(1, in_flight=2), ep(2)], {WARM: 6}, 4.0, [9.0, 7.0]),
        # a request still prefilling (no byte yet) queues its uncached blocks, and will decode there too
        ([ep(1, in_flight=1, prefilling=1, pending_blocks=7), ep(2)], {WARM: 6}, 4.0, [12.0, 7.0]),
        # cached blocks of requests on the warm pod are not load (the old kv-cost counted them)
        ([ep(1, in_flight=1, active_blocks=11), ep(2)], {WARM: 6}, 4.0, [5.0, 7.0]),
        # scraped queue (other gateway replicas): waiting requests look like this one on that endpoint
        ([ep(1, waiting=3), ep(2, waiting=3)], {WARM: 6}, 4.0, [4.0, 28.0]),
        ([ep(1, running=2), ep(2, in_flight=1)], {WARM: 6}, 4.0, [9.0, 11.0]),
        # own counts win when the scrape is stale (lower)
        ([ep(1, in_flight=3, running=1), ep(2)], {}, 4.0, [19.0, 7.0]),
        ([ep(1, prefilling=2, in_flight=2, pending_blocks=10, waiting=1), ep(2)], {}, 4.0, [25.0, 7.0]),
        # decode_weight 0: pure prefill work
        ([ep(1, in_flight=50), ep(2)], {WARM: 6}, 0.0, [1.0, 7.0]),
        # defaults: prefill_weight 2, decode_weight 8
        ([ep(1), ep(2)], {WARM: 6}, None, [2.0, 14.0]),
        # the prompt's first copy is still prefilling on the warm pod: a 7-block prompt is cheaper to copy
        # (test_waiting_for_a_long_prompts_first_copy_beats_copying_it: a long one is not)
        ([ep(1, in_flight=1, prefilling=1, pending_blocks=7), ep(2)], {WARM: 6}, None, [17.0, 14.0]),
        ([ep(1, in_flight=1), ep(2)], {WARM: 6}, None, [10.0, 14.0]),
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
        "defaults-warm-wins-idle",
        "defaults-copy-a-tiny-prompt",
        "defaults-warm-one-running",
    ],
)
def test_ttft_cost(
    endpoints: list[Endpoint], matches: dict[str, int], weight: float | None, expected: list[float]
) -> None:
    scorer = TTFTCost() if weight is None else TTFTCost(prefill_weight=1.0, decode_weight=weight)
    assert scorer.costs(_request(100, matches), endpoints) == expected


def test_ttft_cost_scores_are_min_max_inverse_and_tie_is_neutral() -> None:
    scorer = TTFTCost()
    assert scorer.score(_request(100, {WARM: 6}), [ep(1), ep(2), ep(3)]) == [1.0, 0.0, 0.0]
    assert scorer.score(_request(100, {}), [ep(1), ep(2)]) == [1.0, 1.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"decode_weight": -0.5}, "decode_weight"), ({"prefill_weight": 0.5}, "prefill_weight")],
    ids=["negative-decode-weight", "prefill-weight-below-one"],
)
def test_ttft_cost_rejects_bad_weights(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TTFTCost(**kwargs)


@pytest.mark.parametrize(
    ("prompt_tokens", "prefill_weight", "warm_wins"),
    [(2048 + 128, 2.0, True), (2048 + 128, 1.0, False)],
    ids=["default-weight-waits", "weight-one-copies"],
)
def test_waiting_for_a_long_prompts_first_copy_beats_copying_it(
    prompt_tokens: int, prefill_weight: float, warm_wins: bool
) -> None:
    """gsp's case: a second request for a 2k-token shared prompt arrives while the first copy (136 blocks) is
    still prefilling on the warm pod. At prefill_weight 2 it queues behind it and reuses it (hit rate 82 % in
    flotilla bench); at 1 it copies the prompt to a cold pod (75 %)."""
    scorer = TTFTCost(prefill_weight=prefill_weight)
    blocks = -(-prompt_tokens // 16)
    warm = ep(1, in_flight=1, prefilling=1, pending_blocks=blocks)
    costs = scorer.costs(_request(prompt_tokens, {WARM: 2048 // 16}), [warm, ep(2)])
    assert (costs[0] < costs[1]) is warm_wins, costs


@pytest.mark.parametrize(
    ("prompt_tokens", "limit"),
    [(2048, 32), (1024, 16), (320, 5)],
    ids=["2k-prompt", "1k-prompt", "short-prompt"],
)
def test_warm_pod_stops_winning_after_saving_over_decode_weight(prompt_tokens: int, limit: int) -> None:
    """The anti-hotspot bound, at the defaults: the pod holding a shared prompt wins only while it has fewer than
    prefill_weight × saved blocks ÷ decode_weight (= saved ÷ 4) more requests in flight than a cold, idle pod."""
    scorer = TTFTCost()
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
