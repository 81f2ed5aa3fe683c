"""LoRA registry semantics: ids, LRU capacity, in-place reload, path checks, load latency."""

from __future__ import annotations

import pytest

from engine_sim.errors import SimError
from engine_sim.lora import LoraRegistry


def registry(cap: int = 2) -> tuple[LoraRegistry, list[float]]:
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    return LoraRegistry(max_cpu_loras=cap, sleep=sleep, latency=0.7), slept


async def test_ids_count_up_and_the_cpu_cache_is_lru() -> None:
    reg, slept = registry(2)
    a = await reg.load("a", "org/a")
    b = await reg.load("b", "org/b")
    assert (a.int_id, b.int_id) == (1, 2)
    assert slept == [0.7, 0.7]
    assert reg.make_resident("a")  # used by a step: a is now the most recently used
    c = await reg.load("c", "org/c")
    assert c.int_id == 3
    assert list(reg.resident) == ["a", "c"]
    # evicted from the CPU cache is not unloaded: b stays listed and usable, and reloads when next used
    assert set(reg.adapters) == {"a", "b", "c"}
    assert not reg.make_resident("b")
    assert list(reg.resident) == ["c", "b"]
    reg.unload("b")
    assert "b" not in reg.resident


async def test_load_inplace_keeps_the_id() -> None:
    reg, _ = registry()
    first = await reg.load("a", "org/a")
    with pytest.raises(SimError, match="already been loaded"):
        await reg.load("a", "org/a2")
    again = await reg.load("a", "org/a2", load_inplace=True)
    assert again.int_id == first.int_id
    assert again.path == "org/a2"


@pytest.mark.parametrize(
    ("path", "ok"),
    [("org/adapter", True), ("s3://bucket/adapter", True), ("/definitely/not/here", False),
     ("file:///nope/x", False), ("./missing-dir", False), ("/", True)],
    ids=["hub-id", "s3", "missing-abs", "missing-file-url", "missing-rel", "existing-dir"],
)  # fmt: skip
async def test_local_paths_must_exist(path: str, ok: bool) -> None:
    reg, _ = registry()
    if ok:
        assert (await reg.load("x", path)).path == path
    else:
        with pytest.raises(SimError) as info:
            await reg.load("x", path)
        assert info.value.status == 404
