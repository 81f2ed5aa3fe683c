"""The Flotilla operator: thin kopf handlers over pure manifest builders.

Public surface: ``OperatorConfig`` + ``operator``/``run`` to run it, ``create_registry`` to embed it, and the
builders for anyone who wants to see what a ModelDeployment becomes.
"""

from __future__ import annotations

from flotilla_operator.app import OperatorConfig, create_registry, operator, run
from flotilla_operator.builders import deployment, engine_args, service

__all__ = ["OperatorConfig", "create_registry", "deployment", "engine_args", "operator", "run", "service"]
