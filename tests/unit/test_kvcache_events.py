"""vLLM EventBatch decoding from hand-built msgpack, in every layout producers emit."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from kvcache import AllBlocksCleared, BlockRemoved, BlockStored, EventDecodeError, decode_batch

TOKENS = list(range(32))
STORED = BlockStored([111, 222], None, TOKENS, 16, None, "GPU", None, 0)


def enc(obj: Any) -> bytes:
    return msgspec.msgpack.encode(obj)


def stored_map(**overrides: Any) -> dict[str, Any]:
    event = {
        "type": "BlockStored",
        "block_hashes": [111, 222],
        "parent_block_hash": None,
        "token_ids": TOKENS,
        "block_size": 16,
        "lora_id": None,
        "medium": "GPU",
        "lora_name": None,
        "extra_keys": [None, None],
        "group_idx": 0,
        "kv_cache_spec_kind": "full_attention",
    }
    event.update(overrides)
    return event


LEGACY_STORED = ["BlockStored", [111, 222], None, TOKENS, 16, None, "GPU", None, None, 0]
CASES = [
    pytest.param(
        enc([1.5, [stored_map(), {"type": "BlockRemoved", "block_hashes": [111], "medium": "GPU"}], 0]),
        [STORED, BlockRemoved([111], "GPU", None)],
        0,
        id="current-array-batch-map-events",
    ),
    pytest.param(
        enc([1.5, [LEGACY_STORED, ["BlockRemoved", [111]], ["AllBlocksCleared"]]]),
        [STORED, BlockRemoved([111]), AllBlocksCleared()],
        None,
        id="legacy-array-events-trailing-defaults-omitted",
    ),
    pytest.param(
        enc({"ts": 1.5, "events": [stored_map()], "data_parallel_rank": 2}),
        [STORED],
        2,
        id="map-batch",
    ),
    pytest.param(
        enc([1.5, [["BlockStored", [111, 222], None, TOKENS, 16]]]),
        [BlockStored([111, 222], None, TOKENS, 16)],
        None,
        id="legacy-first-five-fields-only",
    ),
    pytest.param(
        enc([1.5, [stored_map(block_hashes=[b"\x01" * 32, b"\x02" * 32], parent_block_hash=b"\x00" * 32)]]),
        [BlockStored([b"\x01" * 32, b"\x02" * 32], b"\x00" * 32, TOKENS, 16, None, "GPU", None, 0)],
        None,
        id="bytes-hashes",
    ),
    pytest.param(
        enc([1.5, [stored_map(lora_name="sql-adapter", lora_id=3)]]),
        [BlockStored([111, 222], None, TOKENS, 16, 3, "GPU", "sql-adapter", 0)],
        None,
        id="lora",
    ),
]


@pytest.mark.parametrize(("payload", "events", "rank"), CASES)
def test_decodes_every_layout(payload: bytes, events: list[Any], rank: int | None) -> None:
    batch = decode_batch(payload)
    assert batch.ts == 1.5
    assert batch.events == events
    assert batch.data_parallel_rank == rank
    assert batch.unknown_events == 0


def test_unknown_event_types_are_counted_not_fatal() -> None:
    batch = decode_batch(enc([2.0, [{"type": "KVCacheMoved", "x": 1}, ["Whatever"], stored_map()]]))
    assert batch.events == [STORED]
    assert batch.unknown_events == 2


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        pytest.param(b"\xc1", "not msgpack", id="garbage"),
        pytest.param(enc("hello"), "array or a map", id="string-batch"),
        pytest.param(enc([1.0]), "needs", id="short-array"),
        pytest.param(enc({"ts": 1.0}), "no 'events'", id="map-without-events"),
        pytest.param(enc([1.0, {"a": 1}]), "events must be an array", id="events-not-list"),
        pytest.param(enc(["x", []]), "ts must be a number", id="bad-ts"),
        pytest.param(enc([1.0, [42]]), "array or a map", id="event-int"),
        pytest.param(enc([1.0, [[1, 2]]]), "type tag", id="array-event-without-tag"),
        pytest.param(enc([1.0, [{"block_hashes": []}]]), "string 'type'", id="map-event-without-type"),
        pytest.param(enc([1.0, [stored_map(token_ids=TOKENS[:20])]]), "20 token ids", id="token-count"),
        pytest.param(enc([1.0, [stored_map(block_size=0)]]), "block_size", id="zero-block-size"),
        pytest.param(enc([1.0, [stored_map(block_hashes=["x"])]]), "block_hashes", id="string-hash"),
        pytest.param(enc([1.0, [stored_map(token_ids=["a"] * 32)]]), "token_ids", id="string-tokens"),
        pytest.param(enc([1.0, [stored_map(medium=3)]]), "medium", id="bad-medium"),
        pytest.param(enc([1.0, [stored_map(parent_block_hash=1.5)]]), "parent_block_hash", id="float-parent"),
        pytest.param(enc([1.0, [], "zero"]), "data_parallel_rank", id="bad-rank"),
    ],
)
def test_bad_input_gets_a_clear_error(payload: bytes, message: str) -> None:
    with pytest.raises(EventDecodeError, match=message):
        decode_batch(payload)
