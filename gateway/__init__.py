"""gateway: the OpenAI-compatible, prefix- and load-aware router.

``create_app(GatewaySettings(engines=["http://127.0.0.1:8001", ...]))`` builds the ASGI app;
``live_stats(app)`` reads requests served, per-endpoint in-flight counts and prefix hit ratios.
"""

from gateway.app import create_app, live_stats
from gateway.settings import GatewaySettings, ProfileConfig
from gateway.telemetry import EndpointStats, GatewayStats

__all__ = ["EndpointStats", "GatewaySettings", "GatewayStats", "ProfileConfig", "create_app", "live_stats"]
