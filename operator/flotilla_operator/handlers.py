"""Thin kopf handlers: read the object, call the pure builders, apply, mirror status, post events.

Three watch streams feed them:

- ModelDeployments — ``reconcile`` on create, spec update and operator start (resume); an index keeps the
  latest body of every ModelDeployment in memory so the child handlers need no extra GETs.
- Deployments and Services labelled ``app.kubernetes.io/managed-by=flotilla`` — every event is checked for
  drift against the builders' output (restoring deleted or edited children) and, for Deployments, mirrored
  into the owner's status.

Status mirroring (``mirror_status``) never trusts a handler's own snapshots: it re-reads the Deployment and
the ModelDeployment under a per-ModelDeployment lock. Several handlers mirror one owner concurrently, each
holding a snapshot of a different age — ``reconcile``, the Deployment's event stream, and the stream of a
deleted predecessor Deployment (kopf keys its streams by uid) — and the status in kopf's index lags behind
the operator's own writes. Comparing against that stale status once skipped the one write that mattered
(a ModelDeployment stuck at "4/1 ready" after a reverted scale edit); writing from an older Deployment
snapshot after a newer one regresses the status the same way.

Errors: a 403 (a missing RBAC verb) becomes Degraded=True/Forbidden, a Warning event and a retry every 30 s.
``InvalidSpec``/``Rejected`` become a Degraded=True/InvalidSpec condition, a Warning event and
``kopf.PermanentError`` (no retries: the user must change the spec); ``Unavailable`` becomes
``kopf.TemporaryError`` so kopf retries with the server's delay.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import kopf
from pydantic import ValidationError

from flotilla import labels
from flotilla.crds import API_VERSION, ModelDeploymentSpec
from flotilla_operator import builders, status
from flotilla_operator.drift import contains
from flotilla_operator.errors import Forbidden, InvalidSpec, KubeError, NotFound, Rejected, Unavailable
from flotilla_operator.kube import Kube

log = logging.getLogger("flotilla.operator")

#: status writes are serialised per ModelDeployment through one of this many locks (striped by uid, so the
#: memory stays bounded however many ModelDeployments come and go)
STATUS_LOCKS = 64


@dataclass
class State:
    """Shared by every handler through kopf's ``memo`` (kopf shallow-copies it per object)."""

    kube: Kube
    #: image of ``engine.type: simulator`` engines that set no image (``--simulator-image``)
    simulator_image: str | None = None
    #: counters for the benchmark and logs: what the operator actually wrote
    writes: dict[str, int] = field(default_factory=dict)
    locks: tuple[threading.Lock, ...] = field(
        default_factory=lambda: tuple(threading.Lock() for _ in range(STATUS_LOCKS))
    )

    def count(self, what: str) -> None:
        self.writes[what] = self.writes.get(what, 0) + 1

    def status_lock(self, uid: str) -> threading.Lock:
        return self.locks[hash(uid) % len(self.locks)]


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _md_ref(namespace: str, name: str, uid: str) -> dict[str, Any]:
    """Enough of a ModelDeployment for kopf to post an Event about it."""
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelDeployment",
        "metadata": {"namespace": namespace, "name": name, "uid": uid},
    }


def _parse(spec: Any) -> ModelDeploymentSpec:
    try:
        return ModelDeploymentSpec.model_validate(dict(spec))
    except ValidationError as exc:  # the CRD schema should have caught it; an old CRD may not have
        raise InvalidSpec(f"spec does not match the ModelDeployment schema: {exc}") from exc


def _children(
    state: State, name: str, namespace: str, uid: str, spec: ModelDeploymentSpec
) -> list[dict[str, Any]]:
    children = [
        builders.deployment(name, namespace, uid, spec, simulator_image=state.simulator_image),
        builders.service(name, namespace, uid, spec),
    ]
    if spec.network_policy.enabled:
        children.append(builders.network_policy(name, namespace, uid, spec))
    return children


def _retire(state: State, name: str, namespace: str, uid: str, spec: ModelDeploymentSpec) -> list[str]:
    """Delete children the spec no longer asks for (a NetworkPolicy switched off); returns their kinds."""
    if spec.network_policy.enabled:
        return []
    live = state.kube.get("networking.k8s.io/v1", "NetworkPolicy", namespace, name)
    if live is None or uid not in {r.get("uid") for r in live["metadata"].get("ownerReferences") or []}:
        return []  # never ours: a policy the user wrote with the same name stays
    state.count("delete/NetworkPolicy")
    state.kube.delete("networking.k8s.io/v1", "NetworkPolicy", namespace, name)
    return ["NetworkPolicy"]


def ensure(state: State, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Apply ``manifest`` unless the live object already carries it; returns (live object, changed)."""
    meta = manifest["metadata"]
    live = state.kube.get(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
    if live is not None and contains(live, manifest):
        return live, False
    state.count(f"apply/{manifest['kind']}")
    return state.kube.apply(manifest), True


def post_event(
    state: State, involved: dict[str, Any], reason: str, message: str, *, warning: bool = False
) -> None:
    """Best effort: an Event that cannot be posted is logged, never fails the reconciliation."""
    try:
        state.kube.post_event(
            involved, type_="Warning" if warning else "Normal", reason=reason, message=message, now=now()
        )
    except KubeError as exc:
        log.warning("could not post event %s: %s", reason, exc)


def write_status(state: State, md: dict[str, Any], new: dict[str, Any]) -> None:
    if status.unchanged(md.get("status"), new):
        return
    meta = md["metadata"]
    state.count("status")
    with contextlib.suppress(NotFound):  # deleted meanwhile
        state.kube.patch_md_status(meta["namespace"], meta["name"], new)


def mirror_status(
    state: State, md: dict[str, Any], spec: ModelDeploymentSpec, *, observed_generation: int | None = None
) -> None:
    """Mirror the Deployment as it is *now* into the status of ``md`` (whose spec and generation are used).

    Under the owner's lock, the Deployment and the current status are read afresh, so whichever handler writes
    last wrote from a Deployment read after the last change that produced an event, and the skip-if-unchanged
    check compares with what the API server holds, not with a cached copy of the operator's own older write.
    """
    meta = md["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    with state.status_lock(meta["uid"]):
        current = state.kube.get(API_VERSION, "ModelDeployment", namespace, name)
        if current is None or current["metadata"].get("uid") != meta["uid"]:
            return  # deleted (or deleted and recreated) meanwhile: nothing of ours to report on
        deployment = state.kube.get("apps/v1", "Deployment", namespace, name)
        new = status.mirror(
            md={**md, "status": current.get("status") or {}},
            deployment=deployment,
            served_model_name=spec.served_name,
            selector=builders.selector_string(name),
            now=now(),
            observed_generation=observed_generation,
        )
        write_status(state, current, new)


def _reject(state: State, md: dict[str, Any], error: Exception) -> kopf.PermanentError:
    message = str(error)
    post_event(state, md, "InvalidSpec", message, warning=True)
    write_status(state, md, status.invalid(md, message[:2000], now()))
    return kopf.PermanentError(message)


def _forbidden(state: State, md: dict[str, Any], error: Forbidden) -> kopf.TemporaryError:
    """A missing RBAC verb: reported (Degraded/Forbidden, Warning event) and retried, since granting the verb
    fixes it without a spec change. Children applied before the refusal stay; the model is not fully set up."""
    message = f"the operator may not do this (RBAC): {error}"
    post_event(state, md, "Forbidden", message, warning=True)
    write_status(state, md, status.invalid(md, message[:2000], now(), reason="Forbidden"))
    return kopf.TemporaryError(message, delay=30)


def reconcile(
    body: kopf.Body, spec: kopf.Spec, name: str, namespace: str | None, uid: str, meta: kopf.Meta, reason: str,
    memo: State, **_: Any,
) -> None:  # fmt: skip
    """Create or update the Deployment and Service of one ModelDeployment; idempotent."""
    assert namespace is not None, "ModelDeployment is namespaced"
    md = copy.deepcopy(dict(body))
    try:
        parsed = _parse(spec)
        manifests = _children(memo, name, namespace, uid, parsed)
        results = [ensure(memo, m) for m in manifests]
        retired = _retire(memo, name, namespace, uid, parsed)
    except Forbidden as exc:
        raise _forbidden(memo, md, exc) from exc
    except (InvalidSpec, Rejected) as exc:
        raise _reject(memo, md, exc) from exc
    except Unavailable as exc:
        raise kopf.TemporaryError(str(exc), delay=exc.retry_after) from exc

    changed = [m["kind"] for m, (_, did) in zip(manifests, results, strict=True) if did]
    if retired:
        post_event(memo, md, "Deleted", f"Deleted {' and '.join(retired)} {name} (no longer in the spec)")
    if changed:
        verb = "Created" if reason == "create" else "Applied"
        post_event(memo, md, verb, f"{verb} {' and '.join(changed)} {name}")
    try:
        mirror_status(memo, md, parsed, observed_generation=int(meta.get("generation") or 0))
    except Unavailable as exc:
        raise kopf.TemporaryError(str(exc), delay=exc.retry_after) from exc


def index_md(
    body: kopf.Body, name: str, namespace: str | None, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    """Latest body of each ModelDeployment, for the child handlers."""
    return {(namespace or "", name): copy.deepcopy(dict(body))}


def _owner(body: kopf.Body) -> str | None:
    for ref in body.metadata.get("ownerReferences") or []:
        if ref.get("kind") == "ModelDeployment" and ref.get("apiVersion", "").startswith(f"{labels.GROUP}/"):
            return str(ref.get("name"))
    return None


def _lookup(
    index: kopf.Index[tuple[str, str], dict[str, Any]], namespace: str, name: str
) -> dict[str, Any] | None:
    store = index.get((namespace, name))
    if not store:
        return None
    for md in store:
        return md
    return None


def child_event(
    event: kopf.RawEvent, body: kopf.Body, namespace: str | None, memo: State,
    logger: logging.Logger | logging.LoggerAdapter[Any], **kwargs: Any,
) -> None:  # fmt: skip
    """Restore or re-apply a drifted child; mirror a Deployment's status into its ModelDeployment."""
    owner = _owner(body)
    if owner is None or namespace is None:
        return
    md = _lookup(kwargs["index_md"], namespace, owner)
    if md is None or md["metadata"].get("deletionTimestamp"):
        return  # the owner is going away: garbage collection, not drift
    if body.metadata.get("uid") and md["metadata"]["uid"] not in {
        r.get("uid") for r in body.metadata.get("ownerReferences") or []
    }:
        return  # a child of an older ModelDeployment with the same name
    kind = body.get("kind") or ("Deployment" if "template" in (body.get("spec") or {}) else "Service")
    try:
        parsed = _parse(md.get("spec") or {})
        manifest = next(
            (
                m
                for m in _children(memo, owner, namespace, md["metadata"]["uid"], parsed)
                if m["kind"] == kind
            ),
            None,
        )
    except InvalidSpec:
        return  # reported by reconcile already
    if manifest is None:
        return  # a child the spec no longer asks for (reconcile deletes it)
    ref = _md_ref(namespace, owner, md["metadata"]["uid"])
    try:
        if event.get("type") == "DELETED":
            memo.count(f"apply/{kind}")
            memo.kube.apply(manifest)
            post_event(memo, ref, "Restored", f"{kind} {owner} was deleted; recreated it", warning=True)
        elif not contains(dict(body), manifest):
            memo.count(f"apply/{kind}")
            memo.kube.apply(manifest)
            post_event(memo, ref, "DriftCorrected", f"{kind} {owner} was changed; re-applied its spec")
        if kind == "Deployment":
            mirror_status(memo, md, parsed)
    except (Unavailable, Rejected, NotFound) as exc:
        # event handlers are not retried by kopf; the next event (or the resume on restart) tries again
        logger.warning("could not reconcile %s %s/%s: %s", kind, namespace, owner, exc)
