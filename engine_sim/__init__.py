"""engine_sim: a vLLM-compatible engine simulator (OpenAI API, metrics, KV events, LoRA, faults).

Public API::

    cfg = EngineConfig(port=8001, preset="zero", time_scale=0.1)
    app = create_app(cfg)                      # a FastAPI app that starts its engine in lifespan
    async with serve_engines(fleet_configs(cfg, 4, 8001, 5557)) as running:
        ...                                    # running[i].url, running[i].engine

``replay(cfg, arrivals)`` runs the same scheduler in pure simulated time (no HTTP): GPU profiling and plan
validation for the optimizer. ``GPU_PRESETS`` are the presets derived from GPU datasheets (``gpus.py``).

See docs/engine_sim.md.
"""

from engine_sim.config import PRESETS, EngineConfig, Faults
from engine_sim.engine import Engine, RequestHandle
from engine_sim.errors import EngineDead, SimError
from engine_sim.gpus import DERIVED as GPU_PRESETS
from engine_sim.offline import Arrival, Outcome, replay
from engine_sim.profile import LatencyProfile
from engine_sim.runner import RunningEngine, fleet_configs, serve_engines
from engine_sim.server import create_app

__all__ = [
    "GPU_PRESETS",
    "PRESETS",
    "Arrival",
    "Engine",
    "EngineConfig",
    "EngineDead",
    "Faults",
    "LatencyProfile",
    "Outcome",
    "RequestHandle",
    "RunningEngine",
    "SimError",
    "create_app",
    "fleet_configs",
    "replay",
    "serve_engines",
]
