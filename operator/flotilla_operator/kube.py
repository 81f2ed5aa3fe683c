"""The operator's only door to the API server: a few REST calls over the official ``kubernetes`` client.

Why raw paths instead of the typed ``AppsV1Api`` methods: the operator works with plain dicts end to end
(builders produce them, kopf hands them over), and server-side apply wants the manifest exactly as built.
Every ``kubernetes``/``urllib3`` exception is translated here into ``flotilla_operator.errors``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from flotilla.crds import GROUP, VERSION
from flotilla_operator.errors import Forbidden, KubeError, NotFound, Rejected, Unavailable

log = logging.getLogger("flotilla.operator")

FIELD_MANAGER = "flotilla-operator"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
MD_PLURAL = "modeldeployments"

#: seconds; a stuck API call must not pin a kopf worker forever
REQUEST_TIMEOUT = 30.0


def _path(api_version: str, kind_plural: str, namespace: str, name: str | None = None, sub: str = "") -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{prefix}/namespaces/{namespace}/{kind_plural}"
    if name:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    return path


LORA_PLURAL = "loraadapters"
_PLURALS = {
    "Deployment": "deployments",
    "Service": "services",
    "NetworkPolicy": "networkpolicies",
    "ModelDeployment": MD_PLURAL,
    "LoRAAdapter": LORA_PLURAL,
}


def translate(exc: BaseException, what: str) -> KubeError:
    """Map a client exception to the operator's tree (the one boundary where this happens)."""
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        detail = exc.reason or ""
        with contextlib.suppress(ValueError, AttributeError):
            detail = json.loads(exc.body or "{}").get("message") or detail
        message = f"{what}: {status} {detail}".strip()
        if status == 404:
            return NotFound(message, status=status)
        if status == 403:
            return Forbidden(message, status=status)
        if status in (400, 422):
            return Rejected(message, status=status)
        retry_after = 5.0
        headers = exc.headers or {}
        if "Retry-After" in headers:
            with contextlib.suppress(ValueError):
                retry_after = float(headers["Retry-After"])
        return Unavailable(message, status=status or None, retry_after=retry_after)
    return Unavailable(f"{what}: {type(exc).__name__}: {exc}")


@dataclass
class Kube:
    """Thread-safe (urllib3 pools are): kopf runs sync handlers in a thread pool."""

    api: client.ApiClient
    field_manager: str = FIELD_MANAGER

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        what = f"{method} {path}"
        try:
            _method, url, header_params, serialized, _post = self.api.param_serialize(
                method=method,
                resource_path=path,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self.api.call_api(
                method, url, header_params=header_params, body=serialized, _request_timeout=REQUEST_TIMEOUT
            )
            response.read()  # type: ignore[no-untyped-call]
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise translate(exc, what) from exc
        if not 200 <= response.status < 300:
            error = ApiException(
                status=response.status, reason=response.reason, body=(response.data or b"").decode()
            )
            error.headers = response.getheaders()  # type: ignore[no-untyped-call]
            raise translate(error, what) from error
        data: dict[str, Any] = json.loads(response.data or b"{}")
        return data

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply ``manifest`` as Flotilla's field manager (forcing: Flotilla owns these fields)."""
        meta = manifest["metadata"]
        path = _path(manifest["apiVersion"], _PLURALS[manifest["kind"]], meta["namespace"], meta["name"])
        query = [("fieldManager", self.field_manager), ("force", "true")]
        return self.request("PATCH", path, body=manifest, query=query, content_type=APPLY)

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete an object; False if it was not there."""
        try:
            self.request("DELETE", _path(api_version, _PLURALS[kind], namespace, name))
        except NotFound:
            return False
        return True

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", _path(api_version, _PLURALS[kind], namespace, name))
        except NotFound:
            return None

    def patch_md_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch the /status subresource (the main endpoint ignores status on CRDs with /status)."""
        path = _path(f"{GROUP}/{VERSION}", MD_PLURAL, namespace, name, sub="status")
        return self.request("PATCH", path, body={"status": status}, content_type=MERGE)

    def patch_lora_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        path = _path(f"{GROUP}/{VERSION}", LORA_PLURAL, namespace, name, sub="status")
        return self.request("PATCH", path, body={"status": status}, content_type=MERGE)

    def post_event(
        self, involved: dict[str, Any], *, type_: str, reason: str, message: str, now: str
    ) -> None:
        """A core/v1 Event about ``involved`` (what ``kubectl describe`` and ``kubectl get events`` show)."""
        meta = involved["metadata"]
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid", ""),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": self.field_manager},
            "reportingComponent": self.field_manager,
            "reportingInstance": self.field_manager,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self.request("POST", f"/api/v1/namespaces/{meta['namespace']}/events", body=event)


def api_client(
    kubeconfig: str | None, *, context: str | None = None, pool_size: int = 32
) -> client.ApiClient:
    """An ApiClient from a kubeconfig file, or from the pod's service account when ``kubeconfig`` is None."""
    configuration = client.Configuration()
    if kubeconfig:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    else:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = pool_size
    if not configuration.verify_ssl:
        # the kubeconfig asked for insecure-skip-tls-verify; one warning per request would drown the log
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    return client.ApiClient(configuration)
