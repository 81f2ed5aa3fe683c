"""Kubernetes discovery: engine pods by the label contract (:mod:`flotilla.labels`), and the catalog.

A pod is an endpoint while it is Running, Ready, not terminating and has an IP; its URL is
``http://<podIP>:<engine-port annotation or 8000>``, its model the ``flotilla.dev/model`` label (the served name
annotation wins when present, since label values are mangled), and its KV-event publisher
``tcp://<podIP>:<kv-events-port>`` when it carries ``flotilla.dev/kv-events=true``.

The official client's watch is blocking, so it runs in a thread and hands full snapshots to the event loop
(``call_soon_threadsafe``); after any watch error it re-lists, so a missed event heals on the next cycle.
The client is configured from ``kubeconfig`` or in-cluster config only when discovery is enabled.

The catalog watcher follows ModelDeployments and LoRAAdapters the same way: each served model name, and each
adapter with its base model's served name, is declared in :class:`gateway.catalog.Catalog`, so requests for a
model at zero replicas or an adapter being placed are held rather than refused. Without read access to those
resources (RBAC) it logs a warning and keeps retrying; pod discovery is unaffected.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from flotilla import labels
from flotilla.crds import GROUP, VERSION, LoRAAdapterSpec, ModelDeploymentSpec
from gateway.endpoints import EndpointSpec

log = logging.getLogger("flotilla.gateway")


def _get(obj: Any, *path: str) -> Any:
    for name in path:
        if obj is None:
            return None
        obj = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
    return obj


def pod_to_spec(pod: Any) -> EndpointSpec | None:
    """The endpoint a pod (dict or kubernetes client object) stands for, or None if it is not serving."""
    if _get(pod, "metadata", "deletion_timestamp") or _get(pod, "metadata", "deletionTimestamp"):
        return None
    if _get(pod, "status", "phase") != "Running":
        return None
    ip = _get(pod, "status", "pod_ip") or _get(pod, "status", "podIP")
    if not ip:
        return None
    conditions = _get(pod, "status", "conditions") or []
    if not any(_get(c, "type") == "Ready" and _get(c, "status") == "True" for c in conditions):
        return None
    meta_labels = _get(pod, "metadata", "labels") or {}
    annotations = _get(pod, "metadata", "annotations") or {}
    try:
        port = int(annotations.get(labels.ENGINE_PORT, labels.DEFAULT_ENGINE_PORT))
    except ValueError:
        port = labels.DEFAULT_ENGINE_PORT
    host = f"[{ip}]" if ":" in ip else ip
    model = annotations.get(labels.SERVED_MODEL_NAME) or meta_labels.get(labels.MODEL)
    kv_events = None
    if meta_labels.get(labels.KV_EVENTS) == "true":
        kv_port = annotations.get(labels.KV_EVENTS_PORT, labels.DEFAULT_KV_EVENTS_PORT)
        kv_events = f"tcp://{host}:{kv_port}"
    return EndpointSpec(
        url=f"http://{host}:{port}",
        model=model,
        kv_events=kv_events,
        routing_profile=annotations.get(labels.ROUTING_PROFILE) or None,
        gpu_type=meta_labels.get(labels.GPU_TYPE) or None,
    )


def selector(extra: str = "") -> str:
    base = f"{labels.COMPONENT}={labels.COMPONENT_ENGINE}"
    return f"{base},{extra}" if extra else base


def _api_client(kubeconfig: str | None) -> Any:
    from kubernetes import client, config

    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    config.load_incluster_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


#: the API server ends each watch after this many seconds (then we re-list); a list call gets this long
WATCH_SECONDS = 60
LIST_TIMEOUT = 30


class _ListWatch:
    """One blocking list+watch loop in a daemon thread: ``publish`` gets the full snapshot (name -> object)
    after the list and after every event; any error re-lists after a pause, so a missed event heals."""

    def __init__(
        self, what: str, list_fn: Callable[..., Any], publish: Callable[[dict[str, Any]], None]
    ) -> None:
        self.what = what
        self.list_fn = list_fn
        self.publish = publish
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: Any = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"flotilla-{self.what}-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            try:
                listed = self.list_fn(_request_timeout=LIST_TIMEOUT)
                items = {_name(o): o for o in _items(listed)}
                self.publish(items)
                self._watch = watch.Watch()  # type: ignore[no-untyped-call]
                for event in self._watch.stream(
                    self.list_fn,
                    resource_version=_resource_version(listed),
                    timeout_seconds=WATCH_SECONDS,
                    # client side too: a watch whose connection silently died would otherwise block forever
                    _request_timeout=(LIST_TIMEOUT, WATCH_SECONDS + 30),
                ):
                    obj = event["object"]
                    if event["type"] == "DELETED":
                        items.pop(_name(obj), None)
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        items[_name(obj)] = obj
                    self.publish(items)
                    if self._stop.is_set():
                        break
            except Exception as exc:  # the watch thread must survive API hiccups; re-list after a pause
                if self._stop.is_set():
                    break
                log.warning("%s watch failed (%s: %s); re-listing", self.what, type(exc).__name__, exc)
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()


def _items(listed: Any) -> list[Any]:
    return list(listed["items"] if isinstance(listed, dict) else listed.items)


def _resource_version(listed: Any) -> str | None:
    version = _get(listed, "metadata", "resource_version") or _get(listed, "metadata", "resourceVersion")
    return str(version) if version else None


def _name(obj: Any) -> str:
    return f"{_get(obj, 'metadata', 'namespace')}/{_get(obj, 'metadata', 'name')}"


class PodWatcher:
    """Watches engine pods; ``on_change`` gets the full set of endpoint specs on the event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_change: Callable[[list[EndpointSpec]], None],
        *,
        namespace: str | None,
        label_selector: str = "",
        kubeconfig: str | None = None,
    ) -> None:
        self.loop = loop
        self.on_change = on_change
        self.namespace = namespace
        self.selector = selector(label_selector)
        self.kubeconfig = kubeconfig
        self._loop_thread: _ListWatch | None = None

    def start(self) -> None:
        from kubernetes import client

        api = client.CoreV1Api(_api_client(self.kubeconfig))

        def list_pods(**kwargs: Any) -> Any:
            if self.namespace:
                return api.list_namespaced_pod(self.namespace, label_selector=self.selector, **kwargs)
            return api.list_pod_for_all_namespaces(label_selector=self.selector, **kwargs)

        self._loop_thread = _ListWatch("pod", list_pods, self._publish)
        self._loop_thread.start()

    def _publish(self, pods: dict[str, Any]) -> None:
        specs = [s for s in map(pod_to_spec, pods.values()) if s is not None]
        self.loop.call_soon_threadsafe(self.on_change, specs)

    def stop(self) -> None:
        if self._loop_thread is not None:
            self._loop_thread.stop()


def catalog_entries(deployments: Mapping[str, Any], adapters: Mapping[str, Any]) -> dict[str, str | None]:
    """Served model names of ModelDeployments, and adapter names -> their base model's served name.

    Keys of both mappings are ``namespace/name``; an adapter whose ModelDeployment is unknown, or an object
    whose spec does not validate, is left out (it cannot be served, so holding requests for it is pointless).
    """
    served: dict[str, str] = {}
    for key, md in deployments.items():
        try:
            served[key] = ModelDeploymentSpec.model_validate(md.get("spec") or {}).served_name
        except ValidationError:
            continue
    entries: dict[str, str | None] = dict.fromkeys(served.values())
    for key, lora in adapters.items():
        try:
            spec = LoRAAdapterSpec.model_validate(lora.get("spec") or {})
        except ValidationError:
            continue
        namespace = key.split("/", 1)[0]
        base = served.get(f"{namespace}/{spec.base_model_deployment}")
        if base is not None:
            entries[spec.adapter_name or _get(lora, "metadata", "name")] = base
    return entries


class CatalogWatcher:
    """Watches ModelDeployments and LoRAAdapters; ``declare("kube", entries)`` runs on the event loop."""

    SOURCE = "kube"

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        declare: Callable[[str, Mapping[str, str | None]], None],
        *,
        namespace: str | None,
        kubeconfig: str | None = None,
    ) -> None:
        self.loop = loop
        self.declare = declare
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self._lock = threading.Lock()
        self._objects: dict[str, dict[str, Any]] = {"modeldeployments": {}, "loraadapters": {}}
        self._threads: list[_ListWatch] = []

    def start(self) -> None:
        from kubernetes import client

        api = client.CustomObjectsApi(_api_client(self.kubeconfig))
        for plural in self._objects:
            self._threads.append(_ListWatch(plural, self._lister(api, plural), self._publisher(plural)))
        for thread in self._threads:
            thread.start()

    def _lister(self, api: Any, plural: str) -> Callable[..., Any]:
        def list_objects(**kwargs: Any) -> Any:
            if self.namespace:
                return api.list_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, **kwargs)
            return api.list_cluster_custom_object(GROUP, VERSION, plural, **kwargs)

        return list_objects

    def _publisher(self, plural: str) -> Callable[[dict[str, Any]], None]:
        def publish(objects: dict[str, Any]) -> None:
            with self._lock:
                self._objects[plural] = dict(objects)
                entries = catalog_entries(self._objects["modeldeployments"], self._objects["loraadapters"])
            self.loop.call_soon_threadsafe(self.declare, self.SOURCE, entries)

        return publish

    def stop(self) -> None:
        for thread in self._threads:
            thread.stop()
