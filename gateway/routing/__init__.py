"""Routing: filter → weighted scorers → picker, with plugins from one registry (see :mod:`.registry`)."""

from gateway.routing.router import Decision, Profile, Router
from gateway.routing.types import RoutingRequest

__all__ = ["Decision", "Profile", "Router", "RoutingRequest"]
