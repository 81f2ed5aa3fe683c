"""Decoder for vLLM's KV-cache event batches (``vllm/distributed/kv_events.py``), both msgpack layouts.

vLLM encodes ``EventBatch`` with msgspec as a positional array ``[ts, events, data_parallel_rank]``. Events
are tagged unions whose layout changed in vLLM PR #42892: the current format is a map ``{"type": tag, …}``;
the legacy format a positional array ``[tag, field1, …]`` with trailing default fields omitted. Some sources
also declare the batch as a map. Producers in the wild (vLLM versions, SGLang, llm-d-inference-sim) emit
all of these, so the decoder accepts an array or a map for both the batch and each event, and ignores event
types it does not know (a newer engine must not break routing).

Decoding goes through msgspec's untyped decoder (one C pass to Python objects) and then a few type checks:
cheaper than trying several typed schemas, and it yields one clear :class:`EventDecodeError` on bad input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from kvcache.errors import EventDecodeError

EngineHash = int | bytes
"""An engine's block hash: a uint64 by default, raw digest bytes with VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0."""


@dataclass(frozen=True, slots=True)
class BlockStored:
    block_hashes: list[EngineHash]
    parent_block_hash: EngineHash | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None = None
    medium: str | None = None
    lora_name: str | None = None
    group_idx: int | None = None


@dataclass(frozen=True, slots=True)
class BlockRemoved:
    block_hashes: list[EngineHash]
    medium: str | None = None
    group_idx: int | None = None


@dataclass(frozen=True, slots=True)
class AllBlocksCleared:
    pass


KVEvent = BlockStored | BlockRemoved | AllBlocksCleared


@dataclass(frozen=True, slots=True)
class EventBatch:
    ts: float
    events: list[KVEvent]
    data_parallel_rank: int | None = None
    unknown_events: int = 0


_STORED_FIELDS = (
    "block_hashes",
    "parent_block_hash",
    "token_ids",
    "block_size",
    "lora_id",
    "medium",
    "lora_name",
    "extra_keys",
    "group_idx",
)
_REMOVED_FIELDS = ("block_hashes", "medium", "group_idx")


def decode_batch(payload: bytes) -> EventBatch:
    """Decode one ZMQ payload frame into an :class:`EventBatch` (array or map layout, either event layout)."""
    try:
        raw = msgspec.msgpack.decode(payload)
    except msgspec.DecodeError as exc:
        raise EventDecodeError(f"not msgpack: {exc}") from exc
    if isinstance(raw, list):
        if len(raw) < 2:
            raise EventDecodeError(f"EventBatch array needs [ts, events, …], got {len(raw)} item(s)")
        ts, events, rank = raw[0], raw[1], raw[2] if len(raw) > 2 else None
    elif isinstance(raw, dict):
        if "events" not in raw:
            raise EventDecodeError("EventBatch map has no 'events' key")
        ts, events, rank = raw.get("ts", 0.0), raw["events"], raw.get("data_parallel_rank")
    else:
        raise EventDecodeError(f"EventBatch must be an array or a map, got {type(raw).__name__}")
    if not isinstance(ts, int | float) or isinstance(ts, bool):
        raise EventDecodeError(f"EventBatch ts must be a number, got {ts!r}")
    if not isinstance(events, list):
        raise EventDecodeError(f"EventBatch events must be an array, got {type(events).__name__}")
    if rank is not None and not _is_int(rank):
        raise EventDecodeError(f"data_parallel_rank must be an int or nil, got {rank!r}")
    out: list[KVEvent] = []
    unknown = 0
    for raw_event in events:
        event = _decode_event(raw_event)
        if event is None:
            unknown += 1
        else:
            out.append(event)
    return EventBatch(float(ts), out, rank, unknown)


def _decode_event(raw: Any) -> KVEvent | None:
    tag: Any
    data: dict[str, Any]
    if isinstance(raw, list):
        if not raw or not isinstance(raw[0], str):
            raise EventDecodeError(f"array-encoded event must start with its type tag, got {raw!r:.80}")
        tag, values = raw[0], raw[1:]
        fields = _STORED_FIELDS if tag == "BlockStored" else _REMOVED_FIELDS
        data = dict(zip(fields, values, strict=False))
    elif isinstance(raw, dict):
        tag = raw.get("type")
        if not isinstance(tag, str):
            raise EventDecodeError(f"map-encoded event needs a string 'type', got {tag!r}")
        data = raw
    else:
        raise EventDecodeError(f"event must be an array or a map, got {type(raw).__name__}")
    if tag == "BlockStored":
        return _stored(data)
    if tag == "BlockRemoved":
        return BlockRemoved(
            _hashes(data.get("block_hashes")),
            _opt_str(data.get("medium"), "medium"),
            _opt_int(data.get("group_idx"), "group_idx"),
        )
    if tag == "AllBlocksCleared":
        return AllBlocksCleared()
    return None


def _stored(data: dict[str, Any]) -> BlockStored:
    hashes = _hashes(data.get("block_hashes"))
    parent = data.get("parent_block_hash")
    if parent is not None and not _is_hash(parent):
        raise EventDecodeError(f"parent_block_hash must be an int, bytes or nil, got {parent!r}")
    tokens = data.get("token_ids")
    if not isinstance(tokens, list) or not all(_is_int(t) for t in tokens):
        raise EventDecodeError("BlockStored.token_ids must be an array of ints")
    block_size = data.get("block_size")
    if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size <= 0:
        raise EventDecodeError(f"BlockStored.block_size must be a positive int, got {block_size!r}")
    if len(tokens) != block_size * len(hashes):
        raise EventDecodeError(
            f"BlockStored has {len(tokens)} token ids for {len(hashes)} block(s) of {block_size}"
        )
    return BlockStored(
        hashes,
        parent,
        tokens,
        block_size,
        _opt_int(data.get("lora_id"), "lora_id"),
        _opt_str(data.get("medium"), "medium"),
        _opt_str(data.get("lora_name"), "lora_name"),
        _opt_int(data.get("group_idx"), "group_idx"),
    )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_hash(v: Any) -> bool:
    return _is_int(v) or isinstance(v, bytes)


def _hashes(v: Any) -> list[EngineHash]:
    if not isinstance(v, list) or not all(_is_hash(h) for h in v):
        raise EventDecodeError(f"block_hashes must be an array of ints or bytes, got {v!r:.80}")
    return v


def _opt_int(v: Any, name: str) -> int | None:
    if v is None or _is_int(v):
        return v  # type: ignore[no-any-return]
    raise EventDecodeError(f"{name} must be an int or nil, got {v!r}")


def _opt_str(v: Any, name: str) -> str | None:
    if v is None or isinstance(v, str):
        return v
    raise EventDecodeError(f"{name} must be a string or nil, got {v!r}")
