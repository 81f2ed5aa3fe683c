"""Endpoint discovery: a static list (standalone mode) or engine pods watched in Kubernetes."""

from gateway.discovery.static import load_engines_file, static_specs

__all__ = ["load_engines_file", "static_specs"]
