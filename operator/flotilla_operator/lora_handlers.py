"""Thin kopf handlers of the LoRA controller (``lora.LoraController``), and their registration.

Indexes keep what a pass needs in memory (adapters by base model, engine pods by ModelDeployment; the
ModelDeployment index is ``handlers.index_md``). Every handler only names the model key and asks the controller
for a pass; see ``lora``'s docstring for the triggers and why passes are per model.
"""

from __future__ import annotations

import functools
from typing import Any

import kopf

from flotilla import labels
from flotilla.crds import GROUP, VERSION
from flotilla_operator.handlers import State
from flotilla_operator.lora import Key, LoraController, served_name

LORA = (GROUP, VERSION, "loraadapters")
ENGINE_PODS = {labels.COMPONENT: labels.COMPONENT_ENGINE, labels.LORA_ENABLED: "true"}


def index_lora(body: kopf.Body, namespace: str | None, **_: Any) -> dict[Key, dict[str, Any]]:
    base = str((body.get("spec") or {}).get("baseModelDeployment") or "")
    return {(namespace or "", base): dict(body)}


def index_lora_pods(body: kopf.Body, namespace: str | None, **_: Any) -> dict[Key, dict[str, Any]]:
    owner = (body.metadata.get("labels") or {}).get(labels.DEPLOYMENT, "")
    return {(namespace or "", owner): {"metadata": dict(body.metadata), "status": dict(body.status),
                                       "spec": {"nodeName": body.spec.get("nodeName")}}}  # fmt: skip


async def on_adapter(
    controller: LoraController, body: kopf.Body, namespace: str | None, memo: State, **kwargs: Any
) -> None:
    key = (namespace or "", str(body.spec.get("baseModelDeployment") or ""))
    await controller.reconcile(key, memo, kwargs)


async def on_delete(
    controller: LoraController, body: kopf.Body, namespace: str | None, memo: State, **kwargs: Any
) -> None:
    """Finalizer: done once no answering pod of the model holds the adapter."""
    key = (namespace or "", str(body.spec.get("baseModelDeployment") or ""))
    outcome = await controller.reconcile(key, memo, kwargs)
    still = outcome.loaded.get(served_name(body)) if outcome is not None else None
    if still:
        raise kopf.TemporaryError(f"still loaded on {', '.join(sorted(still))}", delay=1)
    controller.forget(str(body.get("metadata", {}).get("uid", "")))


async def on_pod(
    controller: LoraController, body: kopf.Body, namespace: str | None, memo: State, **kwargs: Any
) -> None:
    owner = (body.metadata.get("labels") or {}).get(labels.DEPLOYMENT)
    key = (namespace or "", str(owner or ""))
    if owner and kwargs["index_lora"].get(key):
        await controller.reconcile(key, memo, kwargs)


async def on_cleanup(controller: LoraController, **_: Any) -> None:
    await controller.close()


def register(registry: kopf.OperatorRegistry, controller: LoraController | None = None) -> LoraController:
    """Wire the LoRA controller's handlers into ``registry`` (next to the ModelDeployment ones)."""
    controller = controller or LoraController()
    bind = functools.partial
    kopf.index(*LORA, registry=registry, id="index_lora")(index_lora)
    kopf.index("", "v1", "pods", labels=ENGINE_PODS, registry=registry, id="index_lora_pods")(index_lora_pods)
    for decorator in (
        kopf.on.create(*LORA, registry=registry, id="lora"),
        kopf.on.update(*LORA, registry=registry, id="lora", field="spec"),
        kopf.on.resume(*LORA, registry=registry, id="lora"),
    ):
        decorator(bind(on_adapter, controller))
    kopf.timer(*LORA, interval=controller.resync, registry=registry, id="lora_resync")(
        bind(on_adapter, controller)
    )
    kopf.on.delete(*LORA, registry=registry, id="lora_unload")(bind(on_delete, controller))
    kopf.on.event("", "v1", "pods", labels=ENGINE_PODS, registry=registry, id="lora_pods")(
        bind(on_pod, controller)
    )
    kopf.on.cleanup(registry=registry, id="lora_cleanup")(bind(on_cleanup, controller))
    return controller
