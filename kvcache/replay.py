"""Client for vLLM's KV-event replay socket (``replay_endpoint``; reference/vllm-interface.md §4.2).

The publisher keeps its last ``buffer_steps`` batches behind a ROUTER socket. A client sends the start seq
(8 bytes, big-endian) and receives every buffered batch with seq ≥ start as ``[seq, payload]``, then an end
marker (seq = −1, empty payload). A DEALER socket is used rather than vLLM's example REQ client because the
answer is many messages. Each request opens a fresh socket: replays are rare (start-up and lost batches).
"""

from __future__ import annotations

import asyncio

import zmq
import zmq.asyncio

from kvcache.errors import ReplayFailed

END = (-1).to_bytes(8, "big", signed=True)


async def fetch_replay(
    context: zmq.asyncio.Context, url: str, start: int, *, reply_timeout: float = 2.0, limit: int = 100_000
) -> list[tuple[int, bytes]]:
    """Buffered ``(seq, payload)`` batches with seq ≥ ``start``, oldest first."""
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(url)
        await sock.send_multipart([b"", start.to_bytes(8, "big")])
        out: list[tuple[int, bytes]] = []
        while len(out) <= limit:
            frames = await asyncio.wait_for(sock.recv_multipart(), reply_timeout)
            if len(frames) < 2 or len(frames[-2]) != 8:
                raise ReplayFailed(f"replay from {url}: malformed reply with {len(frames)} frame(s)")
            if frames[-2] == END:
                return out
            out.append((int.from_bytes(frames[-2], "big"), frames[-1]))
        raise ReplayFailed(f"replay from {url}: more than {limit} batches")
    except TimeoutError as exc:
        raise ReplayFailed(f"replay from {url}: no answer within {reply_timeout}s") from exc
    except zmq.ZMQError as exc:
        raise ReplayFailed(f"replay from {url}: {exc}") from exc
    finally:
        sock.close(linger=0)
