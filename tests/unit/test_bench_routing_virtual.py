"""The virtual routing fleet (bench/routing_virtual.py) and its policies (bench/routing_policies.py).

Small traces on small engines: determinism, what each policy does with the information it has, and that the
clairvoyant's forecast is the TTFT the engine then really gives."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli import bench
from bench.routing_bound import report
from bench.routing_policies import MODEL, Clairvoyant, ConsistentHash, FlotillaPolicy, SGLangCacheAware
from bench.routing_virtual import (
    STANDARD_ENGINE,
    Arrival,
    Policy,
    RouterView,
    Scraped,
    Trace,
    _Templates,
    isolated_lower_bound,
    make_trace,
    predicted_ttft,
    simulate,
)
from bench.suites import standard
from engine_sim.offline import EngineCore
from kvcache import block_hashes

ENGINE = STANDARD_ENGINE.model_copy(update={"num_gpu_blocks": 256})


def _prompt(prefix: int, own: int, length: int = 640, shared: int = 512) -> list[int]:
    """``shared`` tokens of prefix family ``prefix``, then tokens unique to ``own``."""
    return [1000 + prefix * 7919 + i for i in range(shared)] + [
        500_000 + own * 997 + i for i in range(length - shared)
    ]


def _open_trace(n: int = 24, families: int = 3, gap: float = 0.02) -> Trace:
    prompts = [_prompt(i % families, i) for i in range(n)]
    return Trace("toy", prompts, [8] * n, [f"s{i % families}" for i in range(n)], [i * gap for i in range(n)])


def _policies() -> list[Policy]:
    return [
        FlotillaPolicy(4, seed=3),
        FlotillaPolicy(4, strategy="round-robin"),
        SGLangCacheAware(4),
        ConsistentHash(4),
        Clairvoyant(),
        Clairvoyant(charge_prefill=True),
    ]


@pytest.mark.parametrize("index", range(6), ids=lambda i: _policies()[i].name)
def test_a_replay_is_deterministic(index: int) -> None:
    trace = _open_trace()
    a = simulate(trace, _policies()[index], engines=4, config=ENGINE)
    b = simulate(trace, _policies()[index], engines=4, config=ENGINE)
    assert a.ttfts == b.ttfts
    assert a.per_engine == b.per_engine
    assert a.hit_rate == b.hit_rate
    assert sum(a.per_engine) == len(trace)
    assert len(a.ttfts) == len(trace) - 2
    assert all(0 < t < math.inf for t in a.ttfts)


def test_cache_aware_routers_keep_a_prefix_family_together_and_round_robin_does_not() -> None:
    trace = _open_trace(gap=0.2)  # light load: no balancing needed
    for policy in (FlotillaPolicy(4, seed=1), SGLangCacheAware(4), Clairvoyant(charge_prefill=True)):
        result = simulate(trace, policy, engines=4, config=ENGINE)
        assert result.hit_rate > 0.6, policy.name
    rr = simulate(trace, FlotillaPolicy(4, strategy="round-robin"), engines=4, config=ENGINE)
    assert rr.per_engine == [6, 6, 6, 6]
    assert rr.hit_rate < 0.6


def test_sglang_falls_back_to_the_least_loaded_worker_when_imbalanced() -> None:
    policy = SGLangCacheAware(2, cache_threshold=0.2, balance_abs=2, balance_rel=1.5)
    view = RouterView(0.0, [], [0, 0], [], 16, lambda a: _Templates(_open_trace(), ENGINE).request(a))
    picks = [policy.pick(Arrival(i, 0.0, _prompt(0, i), 8, "s"), view) for i in range(6)]
    # the shared prefix pulls requests to worker 0 until it has 3 more in flight, then worker 1 gets one
    assert picks[:3] == [0, 0, 0]
    assert 1 in picks[3:]
    policy.finished(0, 0)
    assert policy.load == [picks.count(0) - 1, picks.count(1)]


def test_consistent_hash_maps_a_session_to_one_engine_whatever_the_load() -> None:
    policy = ConsistentHash(8)
    view = RouterView(0.0, [], [0] * 8, [], 16, lambda a: _Templates(_open_trace(), ENGINE).request(a))
    picks: dict[str, set[int]] = {}
    for i in range(200):
        view.in_flight[i % 8] += 5  # load changes; the mapping does not
        session = f"user-{i % 40}"
        picks.setdefault(session, set()).add(policy.pick(Arrival(i, 0.0, [1, 2, 3], 8, session), view))
    assert all(len(engines) == 1 for engines in picks.values())
    assert len(set().union(*picks.values())) == 8  # 40 sessions reach every engine of the ring


def test_the_clairvoyant_forecast_is_what_the_engine_then_gives() -> None:
    trace = _open_trace(n=8, gap=0.005)
    templates = _Templates(trace, ENGINE)
    core = EngineCore(ENGINE)
    for i in range(4):
        core.enqueue(templates.request(Arrival(i, i * 0.005, trace.prompts[i], 8, "s")))
    core.advance(0.02)
    probe = Arrival(4, 0.02, trace.prompts[4], 8, "s")
    forecast, cached = predicted_ttft(core, templates.request(probe))
    assert core.busy == 4  # the fork left the engine alone
    real = templates.request(probe)
    core.enqueue(real)
    core.advance(math.inf)
    assert real.timing.ttft == pytest.approx(forecast)
    assert real.cached_tokens == cached


def test_the_isolated_lower_bound_is_below_every_request_of_every_policy_on_an_open_loop_trace() -> None:
    trace = _open_trace(gap=0.01)
    bound = isolated_lower_bound(trace, config=ENGINE, warmup=0.0)
    for policy in _policies():
        ttfts = simulate(trace, policy, engines=4, config=ENGINE, warmup=0.0).ttfts
        assert all(b <= t + 1e-12 for b, t in zip(bound, ttfts, strict=True)), policy.name
    # and it is tight for the first request, which meets an idle fleet
    first = simulate(trace, FlotillaPolicy(4), engines=4, config=ENGINE, warmup=0.0).ttfts[0]
    assert bound[0] == pytest.approx(first)


def test_a_closed_loop_turn_is_sent_only_after_the_previous_answer() -> None:
    run = next(r for r in standard(0).runs if r.workload == "agentic")
    full = make_trace(run, 0)
    keep = full.turns[:2]
    index = {old: new for new, old in enumerate(i for t in keep for i in t)}
    trace = Trace(
        "agentic", [full.prompts[i] for i in index], [full.outputs[i] for i in index],
        [full.sessions[i] for i in index], None, turns=[[index[i] for i in t] for t in keep],
        starts=full.starts[:2], think={index[i]: full.think[i] for i in index},
    )  # fmt: skip
    result = simulate(trace, FlotillaPolicy(2), engines=2, config=ENGINE, warmup=0.0)
    assert len(result.ttfts) == len(trace)
    assert result.hit_rate > 0.3  # later turns find the earlier turns' prompts cached


def test_the_report_names_the_best_peer_and_a_verdict() -> None:
    trace = _open_trace()
    results = []
    for seed in (1, 2):
        for policy in (SGLangCacheAware(4), ConsistentHash(4), FlotillaPolicy(4, seed=seed)):
            r = simulate(trace, policy, engines=4, config=ENGINE)
            r.seed = seed
            results.append(r)
    text = report(results, [1, 2])
    assert "best peer" in text
    assert "`flotilla:default`" in text
    assert "missed" in text or "met" in text


def test_the_cli_refuses_an_unknown_workload_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        bench, ["--suite", "routing-bound", "--workloads", "nope", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "unknown workload(s) ['nope'] for routing-bound" in result.output


def test_an_index_bounded_at_the_engine_cache_forgets_what_the_engine_evicted() -> None:
    # a 640-token prompt is 40 blocks: an index bounded at 40 blocks per engine keeps one prompt per engine
    view = RouterView(0.0, [], [0], [Scraped()], 16, lambda a: _Templates(_open_trace(), ENGINE).request(a))
    held = {}
    for capacity in (40, None):
        policy = FlotillaPolicy(1, seed=0, endpoint_capacity=capacity)
        policy.pick(Arrival(0, 0.0, _prompt(0, 0), 8, "s"), view)
        policy.pick(Arrival(1, 0.0, _prompt(1, 1), 8, "s"), view)
        hashes = block_hashes(_prompt(0, 3), block_size=16, scope=MODEL)
        held[capacity] = policy.index.match_now(hashes, [policy.endpoints[0].key])[policy.endpoints[0].key]
    assert held[None] == 32  # the unbounded index still claims family 0's whole shared prefix
    assert held[40] == 0  # the bounded one evicted it, as the engine's LRU would
