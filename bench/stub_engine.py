"""A near-zero-cost vLLM stand-in for measuring the gateway's own overhead (not a simulator: see engine_sim).

Raw ASGI, so the upstream costs as little CPU as possible and the gateway is what the benchmark measures.
Non-streaming requests get a fixed chat.completion; streaming ones get ``STUB_CHUNKS`` chunks
``STUB_CHUNK_MS`` apart, then ``[DONE]``. Run: ``python -m bench.stub_engine PORT``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import orjson

MODEL = os.environ.get("STUB_MODEL", "stub")
CHUNKS = int(os.environ.get("STUB_CHUNKS", "64"))
CHUNK_MS = float(os.environ.get("STUB_CHUNK_MS", "10"))

_COMPLETION = orjson.dumps(
    {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ba be bi"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
    }
)
_CHUNK = (
    b"data: "
    + orjson.dumps(
        {
            "id": "chatcmpl-stub",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": MODEL,
            "choices": [{"index": 0, "delta": {"content": " ba"}, "finish_reason": None}],
        }
    )
    + b"\n\n"
)
_MODELS = orjson.dumps(
    {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "stub", "parent": None}]}
)
_METRICS = (
    b"vllm:num_requests_running 0\nvllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 0\n"
    b"vllm:prefix_cache_queries_total 0\nvllm:prefix_cache_hits_total 0\n"
)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    path = scope["path"]
    if path == "/v1/models":
        await _send(send, 200, _MODELS, b"application/json")
    elif path == "/metrics":
        await _send(send, 200, _METRICS, b"text/plain")
    elif path in ("/v1/chat/completions", "/v1/completions"):
        if b'"stream":true' in body.replace(b" ", b""):
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            for _ in range(CHUNKS):
                if CHUNK_MS:
                    await asyncio.sleep(CHUNK_MS / 1000)
                await send({"type": "http.response.body", "body": _CHUNK, "more_body": True})
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        else:
            await _send(send, 200, _COMPLETION, b"application/json")
    else:
        await _send(send, 200 if path == "/health" else 404, b"", b"text/plain")


async def _send(send: Any, status: int, body: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    import uvicorn

    port = int(sys.argv[1])
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
