"""KV events over real ZMQ: a subscriber decodes vLLM's wire format and recovers the prompt's blocks."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest
import zmq

from engine_sim.kv_events import END_SEQ, AllBlocksCleared, BlockRemoved, BlockStored, decode_batch
from flotilla.tokenizer import synthetic_text
from kvcache.hashing import block_hashes
from tests.fleet import SimFleet, sim_fleet
from tests.support import free_port

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


class Subscriber:
    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.frames: list[list[bytes]] = []

    def recv(self, timeout: float = 5.0) -> list[bytes] | None:
        if self.sock.poll(int(timeout * 1000)):
            frames = self.sock.recv_multipart()
            self.frames.append(frames)
            return frames
        return None

    def events_until(self, done: Any, timeout: float = 10.0) -> list[Any]:
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not done(out):
            frames = self.recv(0.2)
            if frames is not None:
                out.extend(decode_batch(frames[2]).events)
        return out

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def complete(url: str, prompt: str, max_tokens: int = 1) -> dict[str, Any]:
    r = httpx.post(
        url + "/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": max_tokens}, timeout=30
    )
    r.raise_for_status()
    return dict(r.json())


def connected(sub: Subscriber, url: str) -> None:
    """PUB/SUB drops messages until the subscription propagates (slow joiner): poke until one arrives."""
    for i in range(50):
        complete(url, synthetic_text(range(2000 + i * 40, 2000 + i * 40 + 40)))
        if sub.recv(0.2) is not None:
            while sub.recv(0.2) is not None:
                pass
            return
    pytest.fail("no KV event reached the subscriber")


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    args = ["--time-scale", "0.02", "--num-gpu-blocks", "40", "--max-model-len", "600"]
    with sim_fleet(1, extra_args=args, kv_events=True) as f:
        yield f


@pytest.fixture
def sub(fleet: SimFleet) -> Iterator[Subscriber]:
    s = Subscriber(fleet.kv_event_endpoints[0])
    connected(s, fleet.urls[0])
    try:
        yield s
    finally:
        s.close()


def test_block_stored_token_ids_reproduce_the_prompt_blocks(fleet: SimFleet, sub: Subscriber) -> None:
    url = fleet.urls[0]
    prompt = synthetic_text(range(700, 900))
    ids = httpx.post(url + "/tokenize", json={"model": MODEL, "prompt": prompt}).json()["tokens"]
    full = len(ids) // 16
    complete(url, prompt)
    events = sub.events_until(
        lambda ev: sum(len(e.block_hashes) for e in ev if isinstance(e, BlockStored)) >= full
    )
    stored = [e for e in events if isinstance(e, BlockStored)]
    tokens = [t for e in stored for t in e.token_ids]
    assert tokens == ids[: full * 16]
    assert stored[0].parent_block_hash is None
    assert all(e.block_size == 16 and e.medium == "GPU" and e.lora_name is None for e in stored)
    chain = [h for e in stored for h in e.block_hashes]
    for prev, e in itertools.pairwise(stored):
        assert e.parent_block_hash == prev.block_hashes[-1]
    # a router recomputes its own keys from the token ids; engine hashes stay opaque ids
    assert block_hashes(tokens) == block_hashes(ids)
    assert set(chain).isdisjoint(block_hashes(ids))

    topic, seq, payload = sub.frames[-1]
    assert topic.decode() == f"kv@127.0.0.1:{fleet.ports[0]}@{MODEL}"
    assert len(seq) == 8
    raw = msgspec.msgpack.decode(payload)
    assert isinstance(raw, list)
    assert isinstance(raw[0], float)
    assert raw[1][0]["type"] in {"BlockStored", "BlockRemoved"}
    seqs = [int.from_bytes(f[1], "big") for f in sub.frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_eviction_emits_block_removed_and_reset_emits_all_cleared(fleet: SimFleet, sub: Subscriber) -> None:
    url = fleet.urls[0]
    first = synthetic_text(range(3000, 3300))
    complete(url, first)
    stored = sub.events_until(lambda ev: any(isinstance(e, BlockStored) for e in ev))
    first_hashes = {h for e in stored if isinstance(e, BlockStored) for h in e.block_hashes}
    # 39 usable blocks: two more 300-token prompts must evict the first prompt's cached blocks
    complete(url, synthetic_text(range(4000, 4300)))
    complete(url, synthetic_text(range(5000, 5300)))
    events = sub.events_until(
        lambda ev: first_hashes & {h for e in ev if isinstance(e, BlockRemoved) for h in e.block_hashes}
    )
    removed = {h for e in events if isinstance(e, BlockRemoved) for h in e.block_hashes}
    assert first_hashes & removed

    assert httpx.post(url + "/reset_prefix_cache").status_code == 200
    events = sub.events_until(lambda ev: any(isinstance(e, AllBlocksCleared) for e in ev))
    assert any(isinstance(e, AllBlocksCleared) for e in events)
    # after the reset nothing is cached: the same prompt reports no cached tokens
    again = complete(url, synthetic_text(range(5000, 5300)))
    assert again["usage"]["prompt_tokens_details"] is None


def test_legacy_array_format_and_replay() -> None:
    replay = free_port()
    args = ["--time-scale", "0.02", "--kv-events-format", "array", "--kv-events-replay-port", str(replay)]
    with sim_fleet(1, extra_args=args, kv_events=True) as fleet:
        sub = Subscriber(fleet.kv_event_endpoints[0])
        try:
            connected(sub, fleet.urls[0])
            raw = msgspec.msgpack.decode(sub.frames[-1][2])
            assert raw[1][0][0] in {"BlockStored", "BlockRemoved"}  # positional events, tag first
        finally:
            sub.close()
        ctx = zmq.Context()
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        try:
            dealer.connect(f"tcp://127.0.0.1:{replay}")
            dealer.send_multipart([b"", (0).to_bytes(8, "big")])
            replies = []
            while dealer.poll(5000):
                frames = dealer.recv_multipart()
                replies.append(frames)
                if frames[1] == END_SEQ:
                    break
            assert replies[-1] == [b"", END_SEQ, b""]
            seqs = [int.from_bytes(f[1], "big") for f in replies[:-1]]
            assert seqs[0] == 0
            assert seqs == list(range(len(seqs)))
        finally:
            dealer.close(0)
            ctx.term()
