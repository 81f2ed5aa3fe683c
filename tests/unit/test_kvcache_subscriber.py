"""Precise-mode bookkeeping: router hashes from event tokens, removals, gaps, restarts, clears."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from kvcache import KVEventSubscriber, MemoryIndex, block_hashes

EP, MODEL = "127.0.0.1:8001", "tiny-llama"
PROMPT = list(range(1000, 1000 + 16 * 4))  # 4 blocks
ROUTER = block_hashes(PROMPT, scope=MODEL)


def stored(hashes: list[int], parent: int | None, tokens: list[int], **extra: Any) -> dict[str, Any]:
    return {"type": "BlockStored", "block_hashes": hashes, "parent_block_hash": parent, "token_ids": tokens,
            "block_size": 16, "lora_id": None, "medium": "GPU", "lora_name": None, **extra}  # fmt: skip


def batch(*events: Any) -> bytes:
    return msgspec.msgpack.encode([1.0, list(events), 0])


@pytest.fixture
async def sub() -> KVEventSubscriber:
    s = KVEventSubscriber(MemoryIndex(), block_size=16)
    await s.add_endpoint(EP, "tcp://127.0.0.1:1", MODEL)
    return s


async def depth(sub: KVEventSubscriber, tokens: list[int] = PROMPT, scope: str = MODEL) -> int:
    return (await sub.index.match(block_hashes(tokens, scope=scope), [EP]))[EP]


async def test_chain_split_over_events_gives_the_prompts_router_hashes(sub: KVEventSubscriber) -> None:
    await sub.ingest(EP, 0, batch(stored([11, 12], None, PROMPT[:32])))
    await sub.ingest(EP, 1, batch(stored([13, 14], 12, PROMPT[32:])))
    assert await sub.index.match(ROUTER, [EP]) == {EP: 4}
    assert sub.stats.blocks_stored == 4
    await sub.ingest(EP, 2, batch({"type": "BlockRemoved", "block_hashes": [13], "medium": "GPU"}))
    assert await depth(sub) == 2
    assert sub.stats.blocks_removed == 1


async def test_legacy_array_events_with_zero_parent(sub: KVEventSubscriber) -> None:
    await sub.ingest(EP, 7, msgspec.msgpack.encode([1.0, [["BlockStored", [11, 12], 0, PROMPT[:32], 16]]]))
    assert await depth(sub) == 2
    await sub.ingest(EP, 8, msgspec.msgpack.encode([1.0, [["BlockRemoved", [11]]]]))
    assert await depth(sub) == 0


async def test_lora_blocks_are_scoped_to_the_adapter(sub: KVEventSubscriber) -> None:
    await sub.ingest(EP, 0, batch(stored([11], None, PROMPT[:16], lora_name="sql")))
    assert await depth(sub, PROMPT[:16], "sql") == 1
    assert await depth(sub, PROMPT[:16], MODEL) == 0


async def test_seq_gap_resyncs_the_endpoint(sub: KVEventSubscriber) -> None:
    await sub.ingest(EP, 5, batch(stored([11, 12], None, PROMPT[:32])))
    await sub.ingest(EP, 8, batch(stored([21], None, PROMPT[32:48])))  # 6, 7 lost: drop, then apply this
    assert (sub.stats.gaps, sub.stats.resyncs) == (1, 1)
    assert await depth(sub) == 0
    assert await depth(sub, PROMPT[32:48]) == 1
    # the dropped blocks' engine hashes are gone too: a child of 12 is now an unknown parent
    await sub.ingest(EP, 9, batch(stored([13], 12, PROMPT[32:48])))
    assert sub.stats.unknown_parents == 1


async def test_seq_going_back_is_an_engine_restart(sub: KVEventSubscriber) -> None:
    await sub.ingest(EP, 41, batch(stored([11], None, PROMPT[:16])))
    await sub.ingest(EP, 0, batch())
    assert (sub.stats.restarts, sub.stats.resyncs, sub.stats.gaps) == (1, 1, 0)
    assert await depth(sub) == 0


async def test_all_blocks_cleared_forgets_the_endpoint(sub: KVEventSubscriber) -> None:
    await sub.ingest(EP, 0, batch(stored([11, 12], None, PROMPT[:32])))
    await sub.ingest(EP, 1, batch({"type": "AllBlocksCleared"}))
    assert await depth(sub) == 0
    assert sub.stats.clears == 1
    await sub.ingest(EP, 2, batch(stored([12], 11, PROMPT[16:32])))
    assert sub.stats.unknown_parents == 1


@pytest.mark.parametrize(
    ("event", "counter"),
    [
        pytest.param(stored([11], None, PROMPT[:16], medium="CPU"), "skipped", id="cpu-offload"),
        pytest.param(stored([11], None, PROMPT[:16], group_idx=1), "skipped", id="other-kv-group"),
        pytest.param(
            stored([11], None, PROMPT[:32], block_size=32), "block_size_mismatches", id="block-size"
        ),
        pytest.param(stored([11], 999, PROMPT[:16]), "unknown_parents", id="unknown-parent"),
    ],
)
async def test_blocks_we_cannot_use_are_counted_and_ignored(
    sub: KVEventSubscriber, event: dict[str, Any], counter: str
) -> None:
    await sub.ingest(EP, 0, batch(event))
    assert getattr(sub.stats, counter) == 1
    assert len(sub.index) == 0  # type: ignore[arg-type]


async def test_shared_router_hash_survives_until_its_last_engine_block_goes(sub: KVEventSubscriber) -> None:
    # two engine blocks (e.g. different cache_salt) with the same tokens map to one router hash
    await sub.ingest(EP, 0, batch(stored([11], None, PROMPT[:16]), stored([91], None, PROMPT[:16])))
    await sub.ingest(EP, 1, batch({"type": "BlockRemoved", "block_hashes": [11]}))
    assert await depth(sub) == 1
    await sub.ingest(EP, 2, batch({"type": "BlockRemoved", "block_hashes": [91]}))
    assert await depth(sub) == 0


async def test_undecodable_batch_resyncs(sub: KVEventSubscriber) -> None:
    await sub.ingest(EP, 0, batch(stored([11], None, PROMPT[:16])))
    await sub.ingest(EP, 1, b"\xc1")
    assert (sub.stats.decode_errors, sub.stats.resyncs) == (1, 1)
    assert await depth(sub) == 0
    await sub.ingest(EP, 2, batch())
    assert sub.stats.gaps == 0


async def test_unknown_endpoint_is_a_clear_error(sub: KVEventSubscriber) -> None:
    with pytest.raises(KeyError, match="add_endpoint"):
        await sub.ingest("nope:1", 0, batch())


async def test_closed_subscriber_refuses_new_endpoints(sub: KVEventSubscriber) -> None:
    await sub.close()
    with pytest.raises(RuntimeError, match="closed"):
        await sub.add_endpoint("x:1", "tcp://127.0.0.1:2", MODEL)
    with pytest.raises(RuntimeError, match="closed"):
        sub.start()


@pytest.mark.parametrize(
    ("url", "replay"),
    [
        pytest.param("127.0.0.1:5557", None, id="no-scheme"),
        pytest.param("http://127.0.0.1:5557", None, id="http"),
        pytest.param("tcp://127.0.0.1:5557", "127.0.0.1:5558", id="bad-replay"),
    ],
)
async def test_bad_zmq_urls_are_rejected(sub: KVEventSubscriber, url: str, replay: str | None) -> None:
    with pytest.raises(ValueError, match="not a ZMQ endpoint URL"):
        await sub.add_endpoint("y:1", url, MODEL, replay_url=replay)
