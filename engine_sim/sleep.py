"""vLLM's sleep mode (``/sleep``, ``/wake_up``, ``/is_sleeping``; dev-mode routes in vLLM).

Level 1 offloads weights to CPU, level 2 discards them; both clear the KV cache (→ ``AllBlocksCleared``).
Waking takes ``wake_up_latency`` simulated seconds at level 1 and five times that at level 2 (weights reloaded
from storage); neither figure is verified, both are knobs. What a real vLLM does with a request that arrives
while asleep is undefined, so the simulator answers 503 and refuses to sleep with requests in flight — clear
errors instead of invented behaviour. ``vllm:engine_sleep_state{sleep_state}`` is 1 for the current state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from engine_sim.errors import SimError

if TYPE_CHECKING:
    from engine_sim.engine import Engine

SLEEP_STATES = ("awake", "weights_offloaded", "discard_all")
LEVEL2_FACTOR = 5.0


def sleep_router(engine: Engine) -> APIRouter:
    router = APIRouter()

    @router.post("/sleep")
    async def sleep(request: Request) -> Response:
        raw = request.query_params.get("level", "1")
        if raw not in ("1", "2"):
            raise SimError(400, f"sleep level must be 1 or 2, got {raw!r}", param="level")
        active = len(engine.scheduler.running) + len(engine.scheduler.waiting)
        if active:
            raise SimError(400, f"cannot sleep with {active} requests in flight")
        engine.sleep_level = int(raw)
        engine.reset_prefix_cache()
        engine.metrics.sleep_state(SLEEP_STATES[engine.sleep_level])
        return Response(status_code=200)

    @router.post("/wake_up")
    async def wake_up() -> Response:
        level = engine.sleep_level
        if level:
            factor = LEVEL2_FACTOR if level == 2 else 1.0
            await engine.sleep(engine.config.wake_up_latency * factor)
            engine.sleep_level = 0
            engine.metrics.sleep_state(SLEEP_STATES[0])
        return Response(status_code=200)

    @router.get("/is_sleeping")
    async def is_sleeping() -> Response:
        return JSONResponse({"is_sleeping": engine.sleep_level > 0})

    return router
