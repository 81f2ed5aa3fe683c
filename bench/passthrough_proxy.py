"""The baseline for gateway overhead: a bare pass-through proxy (raw ASGI + one aiohttp session, no routing).

It forwards every POST body to one upstream and relays the response (SSE unbuffered). Anything the Flotilla
gateway costs beyond this is the price of routing, metrics, limits and FastAPI.
Run: ``python -m bench.passthrough_proxy PORT UPSTREAM_URL [--server granian]`` (default: uvicorn with uvloop
and httptools, as the gateway; granian, if installed, to compare ASGI servers on the same app).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import aiohttp


def make_app(upstream: str) -> Any:
    session: aiohttp.ClientSession | None = None

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal session
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))
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
    return make_app(os.environ["PASSTHROUGH_UPSTREAM"])


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2].rstrip("/")
    if sys.argv[3:] == ["--server", "granian"]:
        from granian.constants import Interfaces, Loops
        from granian.log import LogLevels
        from granian.server import Server

        os.environ["PASSTHROUGH_UPSTREAM"] = upstream
        Server(
            "bench.passthrough_proxy:from_env", address="127.0.0.1", port=port, interface=Interfaces.ASGI,
            loop=Loops.uvloop, factory=True, log_level=LogLevels.warning,
        ).serve()  # fmt: skip
        return
    import uvicorn

    uvicorn.run(
        make_app(upstream),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
