"""Workload generators: seeded determinism, shapes, sharing structure, and clear errors."""

from __future__ import annotations

import pytest

from bench import workloads
from bench.workloads import build, prompt_ids
from flotilla.tokenizer import FlotillaTokenizer

SMALL = {
    "gsp": {"groups": 3, "prompts_per_group": 4, "system_len": 64, "question_len": 8, "output_len": 5},
    "multiturn": {"users": 3, "rounds": 3, "system_len": 32, "history_len": 48, "question_len": 8,
                  "answer_len": 6},
    "tenants": {"tenants": 4, "context_len": 64, "requests": 20, "question_len": 8, "output_len": 4},
    "sharegpt": {"requests": 30, "input_median": 40, "output_median": 20, "max_input": 200, "max_output": 50},
    "agentic": {"sessions": 3, "steps": 4, "toolsets": 2, "tools_len": 64, "task_len": 16, "action_len": 8,
                "result_len": 16},
}  # fmt: skip
EXPECTED_COUNT = {"gsp": 12, "multiturn": 9, "tenants": 20, "sharegpt": 30, "agentic": 12}


@pytest.mark.parametrize("name", sorted(SMALL), ids=sorted(SMALL))
def test_seeded_determinism(name: str) -> None:
    a = build(name, seed=7, params=SMALL[name])
    b = build(name, seed=7, params=SMALL[name])
    c = build(name, seed=8, params=SMALL[name])
    assert a.requests == b.requests
    assert a.requests != c.requests
    assert len(a) == EXPECTED_COUNT[name]
    assert [r.index for r in a.requests] == list(range(len(a)))


@pytest.mark.parametrize("name", sorted(SMALL), ids=sorted(SMALL))
def test_text_tokenises_to_generated_lengths(name: str) -> None:
    """Every message's text is synthetic words, so token counts are exact (what the oracle relies on)."""
    tok = FlotillaTokenizer()
    w = build(name, seed=1, params=SMALL[name])
    for request in w.requests:
        for message in request.messages:
            ids = tok.encode(message["content"])
            assert tok.decode(ids) == message["content"]
            assert all(256 <= i < 256 + 2 * 10100 for i in ids)


def test_gsp_shape_and_sharing() -> None:
    w = workloads.gsp(seed=0, **SMALL["gsp"])
    tok = FlotillaTokenizer()
    by_group: dict[str, set[str]] = {}
    for r in w.requests:
        system, user = r.messages
        assert len(tok.encode(system["content"])) == 64
        assert len(tok.encode(user["content"])) == 8
        assert r.max_tokens == 5
        by_group.setdefault(r.session, set()).add(system["content"])
    assert len(by_group) == 3
    assert all(len(systems) == 1 for systems in by_group.values())  # one system prompt per group
    assert len({r.messages[0]["content"] for r in w.requests}) == 3  # ... and different across groups
    assert [r.session for r in w.requests] != sorted(r.session for r in w.requests)  # shuffled
    assert w.working_set_tokens == 3 * 64


def test_multiturn_each_turn_extends_the_previous() -> None:
    w = workloads.multiturn(seed=0, **SMALL["multiturn"])
    last: dict[str, tuple[dict[str, str], ...]] = {}
    rounds: dict[str, int] = {}
    for r in w.requests:
        previous = last.get(r.session)
        if previous is not None:
            assert r.messages[: len(previous)] == previous
            assert r.messages[len(previous)]["role"] == "assistant"
        last[r.session] = r.messages
        rounds[r.session] = rounds.get(r.session, 0) + 1
    assert rounds == {"user-0": 3, "user-1": 3, "user-2": 3}
    # turn r of every user comes before turn r+1 of any
    first_round = {r.session for r in w.requests[:3]}
    assert first_round == {"user-0", "user-1", "user-2"}
    assert len({r.messages[0]["content"] for r in w.requests}) == 1  # shared system prompt


def test_agentic_steps_grow_context() -> None:
    w = workloads.agentic(seed=0, **SMALL["agentic"])
    ids = prompt_ids(w)
    seen: dict[str, list[int]] = {}
    for r, p in zip(w.requests, ids, strict=True):
        prev = seen.get(r.session)
        if prev is not None:
            assert len(p) > len(prev)
            # the new prompt starts with the old one minus its trailing generation prompt (4 tokens)
            assert p[: len(prev) - 4] == prev[:-4]
        seen[r.session] = p


def test_tenants_zipf_popularity() -> None:
    w = workloads.tenants(
        seed=3, tenants=8, context_len=16, requests=2000, question_len=4, output_len=1, zipf=1.0
    )
    counts: dict[str, int] = {}
    for r in w.requests:
        counts[r.session] = counts.get(r.session, 0) + 1
    assert counts["tenant-0"] > counts["tenant-7"] * 3  # rank 1 vs rank 8 ≈ 8× under Zipf 1


def test_sharegpt_lengths_are_lognormal_and_clipped() -> None:
    w = workloads.sharegpt(
        seed=0, requests=400, input_median=100, output_median=50, max_input=300, max_output=80
    )
    tok = FlotillaTokenizer()
    lengths = sorted(len(tok.encode(r.messages[0]["content"])) for r in w.requests)
    assert lengths[0] >= 4
    assert lengths[-1] <= 300
    assert 70 <= lengths[len(lengths) // 2] <= 140  # median near 100
    assert max(r.max_tokens for r in w.requests) <= 80
    assert len({r.messages[0]["content"] for r in w.requests}) == 400  # no sharing


def test_zipf_weights() -> None:
    assert workloads.zipf_weights(4, 0.0) == [0.25] * 4
    w = workloads.zipf_weights(3, 1.0)
    assert sum(w) == pytest.approx(1.0)
    assert w[0] == pytest.approx(2 * w[1]) == pytest.approx(3 * w[2])


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("nope", {}, "unknown workload"),
        ("gsp", {"groups": 0}, "must be positive"),
        ("gsp", {"colour": 1}, "bad parameters"),
    ],
    ids=["unknown-name", "non-positive", "unknown-param"],
)
def test_bad_input_is_a_clear_error(name: str, params: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(name, seed=0, params=params)


def test_oracles_on_a_generated_trace() -> None:
    """GSP's infinite-cache oracle is the shared fraction; a cache smaller than the working set reaches less."""
    from bench.runner import oracle_hit_rates

    w = workloads.gsp(seed=0, groups=4, prompts_per_group=8, system_len=256, question_len=32, output_len=1)
    prompts = prompt_ids(w)
    infinite, bounded = oracle_hit_rates(prompts, 16, capacity_blocks=20)
    total = sum(len(p) for p in prompts)
    # every prompt after its group's first reuses the system prompt's full blocks (>= 256 tokens of ~300)
    assert infinite >= 28 * 256 / total
    assert 0 < bounded < infinite
    assert (
        oracle_hit_rates(prompts, 16, None)[1] != oracle_hit_rates(prompts, 16, None)[1]
    )  # NaN without KV size


def test_mixed_interleaves_prefix_heavy_and_prefix_free_requests() -> None:
    params = {"groups": 3, "prompts_per_group": 4, "system_len": 64, "question_len": 8, "output_len": 5,
              "prefix_free_share": 0.5}  # fmt: skip
    w = build("mixed", seed=2, params=params)
    assert w == build("mixed", seed=2, params=params)
    kinds = [r.session.split("-", 1)[0] for r in w.requests]
    assert kinds.count("heavy") == 12
    assert kinds.count("free") == 12
    assert kinds != sorted(kinds)  # interleaved, not one block after the other
    assert [r.index for r in w.requests] == list(range(24))
    assert w.working_set_tokens == 3 * 64
    with pytest.raises(ValueError, match="prefix_free_share"):
        build("mixed", seed=2, params={**params, "prefix_free_share": 1.0})
