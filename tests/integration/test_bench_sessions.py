"""Closed-loop sessions against a real streaming server (bench/stub_engine.py in its own process): a turn is
sent only after the previous answer of its session has arrived, plus its think time (not a timed test: the
assertions compare the client's own send and finish times, with no threshold on speed)."""

from __future__ import annotations

import itertools
import sys

import pytest

from bench.procs import Proc, free_port, wait_http
from bench.sessions import group_sessions, run_sessions, think_times
from bench.workloads import build

pytestmark = [pytest.mark.timeout(120)]


async def test_each_turn_waits_for_the_previous_answer() -> None:
    port = free_port()
    proc = Proc("stub-sessions", [sys.executable, "-m", "bench.stub_engine", str(port)],
                env={"STUB_CHUNKS": "5", "STUB_CHUNK_MS": "40"})  # fmt: skip
    try:
        await wait_http(proc, f"http://127.0.0.1:{port}/health", within=30)
        workload = build("multiturn", seed=3, params={"users": 3, "rounds": 3, "system_len": 16,
                                                       "history_len": 16, "question_len": 4, "answer_len": 4})  # fmt: skip
        sessions = group_sessions(workload.requests)
        think = think_times(sessions, 0.05, seed=3)
        results, wall = await run_sessions(
            base_url=f"http://127.0.0.1:{port}/v1", sessions=sessions, starts=[0.0, 0.01, 0.02], think=think,
            model="stub", deadline=60.0,
        )  # fmt: skip
    finally:
        proc.stop()
        proc.cleanup()
    assert wall > 0
    assert len(results) == len(workload) == 9
    assert all(r.ok for r in results), [r.error for r in results]
    by_index = {r.index: r for r in results}
    for turns in sessions:
        assert len(turns) == 3
        for prev, nxt in itertools.pairwise(turns):
            a, b = by_index[prev.index], by_index[nxt.index]
            finished = a.scheduled + a.e2e  # send offset + its whole stream
            assert b.scheduled >= finished + think[nxt.index] - 1e-3, (prev.index, nxt.index)


def test_grouping_keeps_trace_order_and_think_times_are_seeded() -> None:
    workload = build("agentic", seed=1, params={"sessions": 3, "steps": 4, "toolsets": 2, "tools_len": 16,
                                                "task_len": 4, "action_len": 4, "result_len": 4})  # fmt: skip
    sessions = group_sessions(workload.requests)
    assert len(sessions) == 3
    for turns in sessions:
        assert len({r.session for r in turns}) == 1
        assert [r.index for r in turns] == sorted(r.index for r in turns)
        # each turn's conversation extends the previous one (closed loop must keep this order)
        for prev, nxt in itertools.pairwise(turns):
            assert nxt.messages[: len(prev.messages)] == prev.messages
    a, b = think_times(sessions, 0.2, seed=5), think_times(sessions, 0.2, seed=5)
    assert a == b
    assert a != think_times(sessions, 0.2, seed=6)
    assert all(a[t[0].index] == 0.0 for t in sessions)
    with pytest.raises(ValueError, match="think time"):
        think_times(sessions, -1.0, seed=0)
