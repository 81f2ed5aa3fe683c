from __future__ import annotations

import random
from collections import Counter

import pytest

from gateway.routing import Router, RoutingRequest
from gateway.routing.plugins.pickers import MaxScore, PowerOfTwo, RoundRobin
from gateway.routing.registry import BUILTIN_PROFILES
from gateway.settings import ProfileConfig
from tests.unit.gateway.support import ep


async def no_match(kind, hashes, keys):
    return {}


def test_every_builtin_profile_builds() -> None:
    router = Router()
    assert set(router.profiles) == set(BUILTIN_PROFILES)
    assert router.profiles["default"].needs_matches == "approximate"
    assert router.profiles["round-robin"].needs_matches is None
    assert Router(prefix_mode="precise").profiles["precise-prefix"].needs_matches == "precise"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"default_profile": "nope"}, "unknown routing profile"),
        ({"model_profiles": {"m": "nope"}}, "unknown routing profile"),
        ({"profiles": {"x": ProfileConfig(scorers={"nope": 1})}}, "unknown routing plugin"),
        ({"profiles": {"x": ProfileConfig(picker="nope")}}, "unknown routing plugin"),
        (
            {"profiles": {"x": ProfileConfig(scorers={"kv-cost": 1}, params={"kv-cost": {"bogus": 1}})}},
            "no parameter",
        ),
        ({"profiles": {"x": ProfileConfig(params={"kv-cost": {"overlap_weight": 1}})}}, "does not use"),
    ],
    ids=["default", "per-model", "scorer", "picker", "param", "param-for-unused-plugin"],
)
def test_bad_config_is_rejected(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        Router(**kwargs)


def test_profile_resolution() -> None:
    router = Router(model_profiles={"m2": "round-robin"})
    assert router.profile_for("m", None).name == "default"  # type: ignore[union-attr]
    assert router.profile_for("m2", None).name == "round-robin"  # type: ignore[union-attr]
    assert router.profile_for("m", "least-request").name == "least-request"  # type: ignore[union-attr]
    assert router.profile_for("m", "bogus") is None


def test_a_models_own_profile_applies_unless_the_gateway_or_the_request_says_otherwise() -> None:
    router = Router(model_profiles={"m2": "round-robin"})
    assert router.discover_profiles({"m": "least-request", "m2": "random", "m3": "nope"}) == ["nope"]
    assert router.profile_for("m", None).name == "least-request"  # type: ignore[union-attr]
    assert router.profile_for("m2", None).name == "round-robin"  # type: ignore[union-attr]  (gateway config)
    assert router.profile_for("m3", None).name == "default"  # type: ignore[union-attr]  (unknown: ignored)
    assert router.profile_for("m", "random").name == "random"  # type: ignore[union-attr]  (header)


def test_custom_params_reach_the_plugin() -> None:
    router = Router(
        profiles={"w": ProfileConfig(scorers={"kv-cost": 1.0}, params={"kv-cost": {"overlap_weight": 3.0}})}
    )
    scorer = router.profiles["w"].scorers[0][0]
    assert scorer.overlap_weight == 3.0  # type: ignore[attr-defined]


async def test_default_profile_spreads_a_shared_prefix_under_load() -> None:
    """The hotspot failure mode: every request shares a 64-block system prompt. With requests in flight, the
    cost model must not send them all to the warm endpoint."""
    router = Router()
    endpoints = [ep(1), ep(2), ep(3)]
    warm: set[str] = set()

    async def match(kind, hashes, keys):
        return {k: len(hashes) for k in keys if k in warm}

    picks = Counter()
    for _ in range(30):  # 30 concurrent requests, none finishes (nor sends its first byte: a burst)
        request = RoutingRequest(model="m", prompt_tokens=1024 + 32, hashes=list(range(64)), max_tokens=128)
        decision = await router.route(router.profiles["default"], request, endpoints, match)
        chosen = decision.ranked[0]
        warm.add(chosen.key)
        # what Proxy._acquire counts
        chosen.in_flight += 1
        chosen.active_blocks += request.blocks
        chosen.prefilling += 1
        chosen.pending_blocks += 66 - request.matches.get(chosen.key, 0)
        picks[chosen.key] += 1
    assert len(picks) == 3
    assert max(picks.values()) - min(picks.values()) <= 2


async def test_default_profile_spreads_a_shared_prefix_once_decoding() -> None:
    """Steady state of the same hotspot: every request in flight is past its first byte (decoding). The warm
    endpoint keeps the prompt only while its extra batch is within saved blocks ÷ decode_weight (66 ÷ 4), then
    a cold endpoint gets it; it never takes all of them."""
    router = Router()
    endpoints = [ep(1), ep(2), ep(3)]
    warm: set[str] = set()

    async def match(kind, hashes, keys):
        return {k: len(hashes) for k in keys if k in warm}

    picks = Counter()
    for _ in range(90):
        request = RoutingRequest(model="m", prompt_tokens=1024 + 32, hashes=list(range(64)), max_tokens=128)
        decision = await router.route(router.profiles["default"], request, endpoints, match)
        chosen = decision.ranked[0]
        warm.add(chosen.key)
        chosen.in_flight += 1
        picks[chosen.key] += 1
    assert len(picks) == 3
    assert max(picks.values()) <= 17 + min(picks.values()), picks


async def test_default_profile_prefers_the_warm_endpoint_when_idle() -> None:
    router = Router()
    endpoints = [ep(1), ep(2), ep(3)]

    async def match(kind, hashes, keys):
        return {"127.0.0.1:2": len(hashes)}

    for _ in range(10):
        request = RoutingRequest(model="m", prompt_tokens=512, hashes=list(range(32)), max_tokens=16)
        decision = await router.route(router.profiles["default"], request, endpoints, match)
        assert decision.ranked[0].key == "127.0.0.1:2"
        assert decision.match_ratio == 1.0


async def test_prefix_only_profile_is_guarded_by_imbalance() -> None:
    router = Router()
    endpoints = [ep(1, in_flight=40), ep(2, in_flight=0)]

    async def match(kind, hashes, keys):
        return {"127.0.0.1:1": len(hashes)}

    request = RoutingRequest(model="m", prompt_tokens=512, hashes=list(range(32)))
    decision = await router.route(router.profiles["prefix-cache"], request, endpoints, match)
    assert [e.key for e in decision.ranked] == [
        "127.0.0.1:2",
        "127.0.0.1:1",
    ]  # filtered one kept as retry target


async def test_ranked_contains_every_candidate_once() -> None:
    router = Router()
    endpoints = [ep(p) for p in range(1, 6)]
    for name, profile in router.profiles.items():
        decision = await router.route(profile, RoutingRequest(model="m", session_id="s"), endpoints, no_match)
        assert sorted(e.key for e in decision.ranked) == sorted(e.key for e in endpoints), name


def test_max_score_breaks_ties_randomly() -> None:
    endpoints = [ep(1), ep(2), ep(3)]
    picker = MaxScore(random.Random(7))
    firsts = Counter(
        picker.rank(RoutingRequest(model="m"), endpoints, [1.0, 1.0, 0.5])[0].key for _ in range(200)
    )
    assert set(firsts) == {"127.0.0.1:1", "127.0.0.1:2"}


def test_round_robin_cycles_per_model() -> None:
    endpoints = [ep(3), ep(1), ep(2)]
    picker = RoundRobin()
    order = [picker.rank(RoutingRequest(model="m"), endpoints, [0, 0, 0])[0].key[-1] for _ in range(6)]
    assert order == ["1", "2", "3", "1", "2", "3"]
    assert picker.rank(RoutingRequest(model="other"), endpoints, [0, 0, 0])[0].key.endswith(":1")


def test_power_of_two_prefers_the_less_loaded_of_its_sample() -> None:
    endpoints = [ep(1, in_flight=9), ep(2, in_flight=0)]
    assert (
        PowerOfTwo(random.Random(1)).rank(RoutingRequest(model="m"), endpoints, [0, 0])[0].key.endswith(":2")
    )
    many = [ep(p, in_flight=p) for p in range(1, 9)]
    firsts = Counter(
        PowerOfTwo(random.Random(3)).rank(RoutingRequest(model="m"), many, [0] * 8)[0].key for _ in range(300)
    )
    assert "127.0.0.1:8" not in firsts  # the most loaded never wins a pair


@pytest.mark.parametrize("profile", ["default", "prefix-cache", "least-request", "round-robin"])
async def test_a_single_candidate_is_routed_with_its_prefix_match(profile: str) -> None:
    """One candidate left: scoring cannot reorder anything and is skipped, but the index is still read, so the
    match (prefill accounting, the match-ratio metric) is the same as with several candidates."""
    router = Router()
    only = ep(1, in_flight=3, waiting=2)

    async def match(kind, hashes, keys):
        return dict.fromkeys(keys, 3)

    request = RoutingRequest(model="m", prompt_tokens=64, hashes=[1, 2, 3, 4], block_size=16)
    decision = await router.route(router.profiles[profile], request, [only], match)
    assert decision.ranked == [only]
    if router.profiles[profile].needs_matches:
        assert request.matches == {only.key: 3}
        assert decision.match_ratio == 0.75
    else:
        assert decision.match_ratio is None
