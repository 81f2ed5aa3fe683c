from __future__ import annotations

import pytest

from flotilla.vllm_metrics import LoraInfo
from gateway.routing.plugins.imbalance import Imbalance
from gateway.routing.plugins.kv_cost import KVCost
from gateway.routing.plugins.kv_usage import KVUsage
from gateway.routing.plugins.least_request import LeastRequest
from gateway.routing.plugins.lora_affinity import LoraAffinity
from gateway.routing.plugins.prefix_match import PrefixMatch
from gateway.routing.plugins.session_affinity import SessionAffinity
from gateway.routing.types import RoutingRequest, min_max_inverse
from tests.unit.gateway.support import ep


@pytest.mark.parametrize(
    ("values", "expected"),
    [([], []), ([3.0], [1.0]), ([2.0, 2.0], [1.0, 1.0]), ([0.0, 10.0, 5.0], [1.0, 0.0, 0.5])],
    ids=["empty", "single", "ties-all-one", "spread"],
)
def test_min_max_inverse(values: list[float], expected: list[float]) -> None:
    assert min_max_inverse(values) == expected


@pytest.mark.parametrize(
    ("endpoints", "expected"),
    [
        ([ep(1, in_flight=0), ep(2, in_flight=4)], [1.0, 0.0]),
        (
            [ep(1, in_flight=1, running=5), ep(2, in_flight=3)],
            [0.0, 1.0],
        ),  # scraped queue (other replicas) counts
        ([ep(1, in_flight=2), ep(2, in_flight=2)], [1.0, 1.0]),
    ],
    ids=["fewer-wins", "scraped-load-counts", "tie"],
)
def test_least_request(endpoints, expected) -> None:
    assert LeastRequest().score(RoutingRequest(model="m"), endpoints) == expected


def test_kv_usage() -> None:
    assert KVUsage().score(RoutingRequest(model="m"), [ep(1, kv=0.25), ep(2, kv=1.0)]) == [0.75, 0.0]


@pytest.mark.parametrize(
    ("hashes", "matches", "expected"),
    [
        ([1, 2, 3, 4], {"127.0.0.1:1": 4, "127.0.0.1:2": 1}, [1.0, 0.25]),
        ([1, 2], {}, [0.0, 0.0]),
        ([], {}, [1.0, 1.0]),
    ],
    ids=["ratio", "cold", "short-prompt-neutral"],
)
def test_prefix_match(hashes, matches, expected) -> None:
    request = RoutingRequest(model="m", hashes=hashes, matches=matches)
    assert PrefixMatch("approximate").score(request, [ep(1), ep(2)]) == expected


def _cost_request(prompt_tokens: int, warm: dict[str, int]) -> RoutingRequest:
    return RoutingRequest(
        model="m",
        prompt_tokens=prompt_tokens,
        hashes=[0] * (prompt_tokens // 16),
        max_tokens=16,
        matches=warm,
    )


@pytest.mark.parametrize(
    ("endpoints", "matches", "weight", "expected_costs"),
    [
        # 64-token prompt = 4 blocks; warm endpoint 1 holds 3 of them
        ([ep(1), ep(2)], {"127.0.0.1:1": 3}, 1.0, [1.0, 4.0]),
        # the warm endpoint is loaded: its load outweighs the prefix saving
        ([ep(1, active_blocks=10), ep(2)], {"127.0.0.1:1": 3}, 1.0, [11.0, 4.0]),
        # weight 0: pure load balancing
        ([ep(1, active_blocks=2), ep(2)], {"127.0.0.1:1": 4}, 0.0, [2.0, 0.0]),
        # scraped KV use (other replicas) counts when it exceeds our own count
        ([ep(1, kv=0.5, gpu_blocks=100), ep(2, active_blocks=3)], {}, 1.0, [54.0, 7.0]),
        # waiting requests are charged this request's size (4 + 1 output block = 5)
        ([ep(1, waiting=2), ep(2)], {}, 1.0, [14.0, 4.0]),
    ],
    ids=["warm-wins", "loaded-warm-loses", "weight-zero", "scraped-usage", "waiting-charged"],
)
def test_kv_cost(endpoints, matches, weight, expected_costs) -> None:
    scorer = KVCost(overlap_weight=weight)
    assert scorer.costs(_cost_request(64, matches), endpoints) == expected_costs


def test_kv_cost_rejects_negative_weight() -> None:
    with pytest.raises(ValueError, match="overlap_weight"):
        KVCost(overlap_weight=-1)


def test_session_affinity_is_stable_and_neutral_without_session() -> None:
    endpoints = [ep(p) for p in range(1, 6)]
    scorer = SessionAffinity()
    first = scorer.score(RoutingRequest(model="m", session_id="s-1"), endpoints)
    assert sorted(first) == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert scorer.score(RoutingRequest(model="m", session_id="s-1"), list(reversed(endpoints))) == list(
        reversed(first)
    )
    assert scorer.score(RoutingRequest(model="m"), endpoints) == [1.0] * 5


def test_session_affinity_moves_only_sessions_of_a_removed_endpoint() -> None:
    endpoints = [ep(p) for p in range(1, 5)]
    scorer = SessionAffinity()

    def owner(eps, sid):
        scores = scorer.score(RoutingRequest(model="m", session_id=sid), eps)
        return eps[scores.index(1.0)].key

    sessions = [f"s{i}" for i in range(200)]
    before = {s: owner(endpoints, s) for s in sessions}
    after = {s: owner(endpoints[1:], s) for s in sessions}
    moved = [s for s in sessions if before[s] != after[s]]
    assert moved
    assert all(before[s] == endpoints[0].key for s in moved)


LORA = LoraInfo(running=frozenset({"a"}), waiting=frozenset({"w"}), max_lora=2)
FULL = LoraInfo(running=frozenset({"x", "y"}), waiting=frozenset({"w"}), max_lora=2)


@pytest.mark.parametrize(
    ("model", "is_adapter", "info", "expected"),
    [
        ("a", True, LORA, 1.0),
        ("b", True, LORA, 0.8),
        ("w", True, FULL, 0.6),
        ("z", True, FULL, 0.0),
        ("m", False, FULL, 1.0),
        ("a", True, None, 1.0),
    ],
    ids=["running", "free-slot", "waiting", "would-swap", "base-model", "no-lora-metrics"],
)
def test_lora_affinity(model, is_adapter, info, expected) -> None:
    request = RoutingRequest(model=model, is_adapter=is_adapter)
    assert LoraAffinity().score(request, [ep(1, lora=info)]) == [expected]


@pytest.mark.parametrize(
    ("loads", "kept"),
    [([0, 20], [0]), ([10, 12], [0, 1]), ([100, 108], [0, 1]), ([0, 8], [0, 1]), ([3, 3, 30], [0, 1])],
    ids=["skewed", "balanced", "abs-but-not-rel", "at-threshold", "ties-kept"],
)
def test_imbalance_filter(loads, kept) -> None:
    endpoints = [ep(i + 1, in_flight=load) for i, load in enumerate(loads)]
    out = Imbalance(abs_threshold=8, rel_threshold=1.5).filter(RoutingRequest(model="m"), endpoints)
    assert out == [endpoints[i] for i in kept]
