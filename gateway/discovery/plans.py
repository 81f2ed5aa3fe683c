"""Where the gateway's size-aware routing plans come from: ModelGroups' status, or a file.

* Kubernetes: :class:`PlanWatcher` lists and watches ModelGroups (same list+watch loop as pod discovery) and
  hands ``served model -> plan`` to the router whenever any group changes. A group's plan is
  ``status.plan`` (bounds and ``split: [{gpuType, shares}]``), written by the operator's group controller;
  a group without one yet, or with one that does not fit its own grid, routes as if it had none.
* Standalone: ``--routing-plan FILE`` — the JSON ``flotilla optimize --json`` prints (``model``,
  ``input_bounds``, ``output_bounds``, ``split: {gpu: shares}``), or a list of them; engines get their GPU
  type from the engines file (``gpu_type``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flotilla.crds import GROUP, VERSION
from gateway.discovery.kube import _api_client, _get, _ListWatch
from gateway.routing.plans import SizePlan, parse_plan

log = logging.getLogger("flotilla.gateway")

__all__ = ["PlanWatcher", "load_plan_file", "plans_from_groups"]


def plans_from_groups(groups: Mapping[str, Any]) -> dict[str, SizePlan]:
    """``served model -> plan`` from ModelGroup objects (dicts as the API returns them)."""
    out: dict[str, SizePlan] = {}
    for key, group in sorted(groups.items()):
        model = _get(group, "spec", "model")
        plan = _get(group, "status", "plan")
        if not model or not isinstance(plan, dict) or not plan.get("split"):
            continue
        try:
            split = {s["gpuType"]: s["shares"] for s in plan["split"]}
            out[str(model)] = parse_plan(plan.get("inputBounds") or (), plan.get("outputBounds") or (), split)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("ModelGroup %s: ignoring its plan (%s)", key, exc)
    return out


def load_plan_file(path: Path) -> dict[str, SizePlan]:
    """Plans from a ``flotilla optimize --json`` file (one object or a list); ``ValueError`` when malformed."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read routing plan {path}: {exc}") from exc
    out: dict[str, SizePlan] = {}
    for i, entry in enumerate(data if isinstance(data, list) else [data]):
        if not isinstance(entry, dict) or not entry.get("model") or not isinstance(entry.get("split"), dict):
            raise ValueError(f"routing plan {path}: entry {i} needs 'model' and a 'split' object")
        try:
            out[str(entry["model"])] = parse_plan(
                entry.get("input_bounds") or (), entry.get("output_bounds") or (), entry["split"]
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"routing plan {path}: entry {i}: {exc}") from exc
    return out


class PlanWatcher:
    """Watches ModelGroups; ``on_change(plans)`` runs on the event loop after every change."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_change: Callable[[dict[str, SizePlan]], None],
        *,
        namespace: str | None,
        kubeconfig: str | None = None,
    ) -> None:
        self.loop = loop
        self.on_change = on_change
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self._thread: _ListWatch | None = None

    def start(self) -> None:
        from kubernetes import client

        api = client.CustomObjectsApi(_api_client(self.kubeconfig))

        def list_groups(**kwargs: Any) -> Any:
            if self.namespace:
                return api.list_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, "modelgroups", **kwargs
                )
            return api.list_cluster_custom_object(GROUP, VERSION, "modelgroups", **kwargs)

        self._thread = _ListWatch("modelgroups", list_groups, self._publish)
        self._thread.start()

    def _publish(self, groups: dict[str, Any]) -> None:
        plans = plans_from_groups(groups)
        self.loop.call_soon_threadsafe(self.on_change, plans)

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
