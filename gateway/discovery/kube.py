"""Kubernetes discovery: watch engine pods by the label contract (:mod:`flotilla.labels`).

A pod is an endpoint while it is Running, Ready, not terminating and has an IP; its URL is
``http://<podIP>:<engine-port annotation or 8000>``, its model the ``flotilla.dev/model`` label (the served name
annotation wins when present, since label values are mangled), and its KV-event publisher
``tcp://<podIP>:<kv-events-port>`` when it carries ``flotilla.dev/kv-events=true``.

The official client's watch is blocking, so it runs in a thread and hands full snapshots to the event loop
(``call_soon_threadsafe``); after any watch error it re-lists, so a missed event heals on the next cycle.
The client is configured from ``kubeconfig`` or in-cluster config only when discovery is enabled.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from flotilla import labels
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
    return EndpointSpec(url=f"http://{host}:{port}", model=model, kv_events=kv_events)


def selector(extra: str = "") -> str:
    base = f"{labels.COMPONENT}={labels.COMPONENT_ENGINE}"
    return f"{base},{extra}" if extra else base


class PodWatcher:
    """Runs the blocking list+watch loop in a daemon thread; ``on_change`` gets the full set of specs."""

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
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: Any = None

    def start(self) -> None:
        from kubernetes import client, config

        if self.kubeconfig:
            api_client = config.new_client_from_config(config_file=self.kubeconfig)  # type: ignore[no-untyped-call]
        else:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            api_client = client.ApiClient()
        self._api = client.CoreV1Api(api_client)
        self._thread = threading.Thread(target=self._run, name="flotilla-pod-watch", daemon=True)
        self._thread.start()

    def _list(self, **kwargs: Any) -> Any:
        if self.namespace:
            return self._api.list_namespaced_pod(self.namespace, label_selector=self.selector, **kwargs)
        return self._api.list_pod_for_all_namespaces(label_selector=self.selector, **kwargs)

    def _publish(self, pods: dict[str, Any]) -> None:
        specs = [s for s in map(pod_to_spec, pods.values()) if s is not None]
        self.loop.call_soon_threadsafe(self.on_change, specs)

    def _run(self) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            try:
                listed = self._list()
                pods = {f"{p.metadata.namespace}/{p.metadata.name}": p for p in listed.items}
                self._publish(pods)
                self._watch = watch.Watch()  # type: ignore[no-untyped-call]
                func = (
                    self._api.list_namespaced_pod if self.namespace else self._api.list_pod_for_all_namespaces
                )
                args = (self.namespace,) if self.namespace else ()
                for event in self._watch.stream(
                    func,
                    *args,
                    label_selector=self.selector,
                    resource_version=listed.metadata.resource_version,
                    timeout_seconds=60,
                ):
                    pod = event["object"]
                    name = f"{pod.metadata.namespace}/{pod.metadata.name}"
                    if event["type"] == "DELETED":
                        pods.pop(name, None)
                    else:
                        pods[name] = pod
                    self._publish(pods)
                    if self._stop.is_set():
                        break
            except Exception as exc:  # the watch thread must survive API hiccups; re-list after a pause
                if self._stop.is_set():
                    break
                log.warning("pod watch failed (%s: %s); re-listing", type(exc).__name__, exc)
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
