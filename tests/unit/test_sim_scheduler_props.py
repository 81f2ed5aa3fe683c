"""Scheduler + block pool invariants under random workloads (shared prefixes, tiny KV, aborts, LoRA)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine_sim.blocks import BlockPool
from engine_sim.hashing import BlockHasher, none_hash
from engine_sim.request import Request, Status
from engine_sim.scheduler import Scheduler

BS = 4

workload = st.lists(
    st.tuples(
        st.integers(0, 2),  # which shared prefix
        st.integers(1, 30),  # unique suffix length
        st.integers(1, 12),  # max_tokens
        st.sampled_from([None, "A", "B"]),  # adapter
        st.integers(0, 40),  # abort after this many steps (40 = never)
    ),
    min_size=1,
    max_size=12,
)


def check_pool(s: Scheduler) -> None:
    pool = s.pool
    held: dict[int, int] = {}
    for r in s.running:
        for b in r.block_ids:
            held[b] = held.get(b, 0) + 1
    for b in range(1, pool.num_blocks):
        assert pool.ref[b] == held.get(b, 0), b
        assert (b in pool.free) == (pool.ref[b] == 0), b
    for h, holders in pool.cached.items():
        for b in holders:
            assert pool.hash[b] == h
    assert all(not r.block_ids for r in s.waiting)


@settings(max_examples=60, deadline=None)
@given(
    workload,
    st.integers(12, 40),
    st.integers(4, 64),
    st.integers(1, 2),
    st.sampled_from(["fcfs", "priority"]),
)
def test_every_request_finishes_and_blocks_balance(items, blocks, budget, max_loras, policy) -> None:
    pool = BlockPool(blocks, BS)
    s = Scheduler(pool, max_num_seqs=4, max_num_batched_tokens=budget, max_loras=max_loras, policy=policy)
    prefixes = [list(range(1000 * p, 1000 * p + 8)) for p in range(3)]
    capacity = pool.usable * BS
    reqs = []
    for i, (p, n, max_tokens, lora, abort_at) in enumerate(items):
        prompt = prefixes[p] + list(range(5000 + 100 * i, 5000 + 100 * i + n))
        if len(prompt) >= capacity:
            continue  # the engine rejects these with a 400 (max_model_len is capped to the KV capacity)
        r = Request(
            request_id=str(i),
            prompt_len=len(prompt),
            tokens=prompt,
            max_tokens=max_tokens,
            natural_len=None,
            stream_seed=i,
            hasher=BlockHasher(none_hash(0), BS, lora, None),
            lora_name=lora,
            max_model_len=capacity,
        )
        r.priority = abort_at % 3
        reqs.append((r, abort_at))
        s.add(r)
    steps = 0
    while s.has_work():
        step = s.schedule()
        loras = {r.lora_name for r, _ in step.scheduled if r.lora_name}
        assert len(loras) <= max_loras
        assert sum(n for _, n in step.scheduled) <= budget
        assert step.shape.tokens == sum(n for _, n in step.scheduled)
        scheduled = [r for r, _ in step.scheduled]
        assert len(set(map(id, scheduled))) == len(scheduled)
        assert all(r.status is Status.RUNNING for r in scheduled)  # no preempted request left in the step
        assert len(s.running) <= 4
        s.complete(step)
        check_pool(s)
        steps += 1
        for r, abort_at in reqs:
            if abort_at == steps and r.status is not Status.FINISHED:
                s.finish(r, "abort")
        assert steps < 5000
    for r, _ in reqs:
        assert r.status is Status.FINISHED
        if r.finish_reason == "length":
            assert r.num_output == r.max_tokens or r.num_tokens >= r.max_model_len
        assert r.finish_reason in {"length", "abort"}
    assert pool.num_free == pool.usable
    assert s.stats.prefix_hits <= s.stats.prefix_queries
