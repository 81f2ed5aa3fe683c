"""The baseline for gateway overhead: a bare pass-through proxy (raw ASGI + one aiohttp session, no routing).

It forwards every POST body to one upstream and relays the response (SSE unbuffered). Anything the Flotilla
gateway costs beyond this is the price of routing, metrics, limits and FastAPI.

``--prefix`` adds the least a prefix-aware router written in Python must do per request, and nothing else:
parse the JSON body, hash the prompt's leading character blocks (chained, 64 characters each, at most 512
blocks, keyed by characters as the SGLang router's tree is), look the hashes up in a table and record them for
the chosen upstream. No metrics, logs, limits, retries or scoring: it bounds from below what a Python router of
this design costs, so its distance from ``bare`` is not an implementation choice of Flotilla's.

Run: ``python -m bench.passthrough_proxy PORT UPSTREAM_URL [--prefix] [--server granian]`` (default: uvicorn
with uvloop and httptools, as the gateway; granian, if installed, to compare ASGI servers on the same app).
``PASSTHROUGH_GC_FREEZE=1`` freezes the startup heap out of the cyclic GC once started, as the gateway does by
default (``gc_freeze``), so the floor can be measured with the same trick.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any

import aiohttp
import orjson
import xxhash

#: characters per block and blocks hashed at most (16 tokens of ~4 characters; the gateway's 512-block cap)
BLOCK_CHARS = 64
MAX_BLOCKS = 512


def prefix_blocks(raw: bytes, table: dict[int, int]) -> int:
    """Parse a chat body, hash its leading character blocks chained, count those ``table`` holds and record
    them all (one upstream: the choice is trivial, the lookup and the record are not)."""
    body = orjson.loads(raw)
    text = memoryview("".join(f"{m['role']}\n{m['content']}\n" for m in body["messages"]).encode())
    end = min(len(text), BLOCK_CHARS * MAX_BLOCKS)
    h = xxhash.xxh3_64_intdigest(body["model"].encode())
    matched = 0
    for start in range(0, end - BLOCK_CHARS + 1, BLOCK_CHARS):
        h = xxhash.xxh3_64_intdigest(text[start : start + BLOCK_CHARS], seed=h)
        if h in table:
            matched += 1
        table[h] = 0
    if len(table) > 500_000:
        table.clear()
    return matched


def make_app(upstream: str, prefix: bool = False, gc_freeze: bool = False) -> Any:
    session: aiohttp.ClientSession | None = None
    table: dict[int, int] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal session
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))
                    if gc_freeze:
                        gc.collect()
                        gc.freeze()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if session is not None:
                        await session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if prefix:
            prefix_blocks(body, table)
        assert session is not None
        async with session.request(
            scope["method"], upstream + scope["path"], data=body, headers={"content-type": "application/json"}
        ) as response:
            headers = [(b"content-type", response.headers.get("content-type", "application/json").encode())]
            await send({"type": "http.response.start", "status": response.status, "headers": headers})
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    return app


def from_env() -> Any:
    """The app for granian's factory mode (it imports the target in its worker process)."""
    return make_app(
        os.environ["PASSTHROUGH_UPSTREAM"],
        prefix=bool(os.environ.get("PASSTHROUGH_PREFIX")),
        gc_freeze=bool(os.environ.get("PASSTHROUGH_GC_FREEZE")),
    )


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2].rstrip("/")
    options = sys.argv[3:]
    prefix = "--prefix" in options
    if options[-2:] == ["--server", "granian"]:
        from granian.constants import Interfaces, Loops
        from granian.log import LogLevels
        from granian.server import Server

        os.environ["PASSTHROUGH_UPSTREAM"] = upstream
        if prefix:
            os.environ["PASSTHROUGH_PREFIX"] = "1"
        Server(
            "bench.passthrough_proxy:from_env", address="127.0.0.1", port=port, interface=Interfaces.ASGI,
            loop=Loops.uvloop, factory=True, log_level=LogLevels.warning,
        ).serve()  # fmt: skip
        return
    import uvicorn

    uvicorn.run(
        make_app(upstream, prefix=prefix, gc_freeze=bool(os.environ.get("PASSTHROUGH_GC_FREEZE"))),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
