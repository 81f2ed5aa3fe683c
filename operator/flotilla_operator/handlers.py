"""Thin kopf handlers: read the object, call the pure builders, apply, mirror status, post events.

Three watch streams feed them:

- ModelDeployments — ``reconcile`` on create, spec update and operator start (resume); an index keeps the
  latest body of every ModelDeployment in memory so the child handlers need no extra GETs.
- Deployments and Services labelled ``app.kubernetes.io/managed-by=flotilla`` — every event is checked for
  drift against the builders' output (restoring deleted or edited children) and, for Deployments, mirrored
  into the owner's status.

Errors: ``InvalidSpec``/``Rejected`` become a Degraded=True/InvalidSpec condition, a Warning event and
``kopf.PermanentError`` (no retries: the user must change the spec); ``Unavailable`` becomes
``kopf.TemporaryError`` so kopf retries with the server's delay.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import logging
from dataclasses import dataclass, field
from typing import Any

import kopf
from pydantic import ValidationError

from flotilla import labels
from flotilla.crds import API_VERSION, ModelDeploymentSpec
from flotilla_operator import builders, status
from flotilla_operator.drift import contains
from flotilla_operator.errors import InvalidSpec, KubeError, NotFound, Rejected, Unavailable
from flotilla_operator.kube import Kube

log = logging.getLogger("flotilla.operator")


@dataclass
class State:
    """Shared by every handler through kopf's ``memo`` (kopf shallow-copies it per object)."""

    kube: Kube
    #: counters for the benchmark and logs: what the operator actually wrote
    writes: dict[str, int] = field(default_factory=dict)

    def count(self, what: str) -> None:
        self.writes[what] = self.writes.get(what, 0) + 1


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


def _children(name: str, namespace: str, uid: str, spec: ModelDeploymentSpec) -> list[dict[str, Any]]:
    return [builders.deployment(name, namespace, uid, spec), builders.service(name, namespace, uid, spec)]


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


def _reject(state: State, md: dict[str, Any], error: Exception) -> kopf.PermanentError:
    message = str(error)
    post_event(state, md, "InvalidSpec", message, warning=True)
    write_status(state, md, status.invalid(md, message[:2000], now()))
    return kopf.PermanentError(message)


def reconcile(
    body: kopf.Body, spec: kopf.Spec, name: str, namespace: str | None, uid: str, meta: kopf.Meta, reason: str,
    memo: State, **_: Any,
) -> None:  # fmt: skip
    """Create or update the Deployment and Service of one ModelDeployment; idempotent."""
    assert namespace is not None, "ModelDeployment is namespaced"
    md = copy.deepcopy(dict(body))
    try:
        parsed = _parse(spec)
        manifests = _children(name, namespace, uid, parsed)
        results = [ensure(memo, m) for m in manifests]
    except (InvalidSpec, Rejected) as exc:
        raise _reject(memo, md, exc) from exc
    except Unavailable as exc:
        raise kopf.TemporaryError(str(exc), delay=exc.retry_after) from exc

    changed = [m["kind"] for m, (_, did) in zip(manifests, results, strict=True) if did]
    if changed:
        verb = "Created" if reason == "create" else "Applied"
        post_event(memo, md, verb, f"{verb} {' and '.join(changed)} {name}")
    new = status.mirror(
        md=md,
        deployment=results[0][0],
        served_model_name=parsed.served_name,
        selector=builders.selector_string(name),
        now=now(),
        observed_generation=int(meta.get("generation") or 0),
    )
    try:
        write_status(memo, md, new)
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
            m for m in _children(owner, namespace, md["metadata"]["uid"], parsed) if m["kind"] == kind
        )
    except InvalidSpec:
        return  # reported by reconcile already
    ref = _md_ref(namespace, owner, md["metadata"]["uid"])
    live: dict[str, Any] | None = copy.deepcopy(dict(body))
    try:
        if event.get("type") == "DELETED":
            memo.count(f"apply/{kind}")
            live = memo.kube.apply(manifest)
            post_event(memo, ref, "Restored", f"{kind} {owner} was deleted; recreated it", warning=True)
        elif not contains(live, manifest):
            memo.count(f"apply/{kind}")
            live = memo.kube.apply(manifest)
            post_event(memo, ref, "DriftCorrected", f"{kind} {owner} was changed; re-applied its spec")
        if kind == "Deployment":
            new = status.mirror(
                md=md,
                deployment=live,
                served_model_name=parsed.served_name,
                selector=builders.selector_string(owner),
                now=now(),
            )
            write_status(memo, md, new)
    except (Unavailable, Rejected, NotFound) as exc:
        # event handlers are not retried by kopf; the next event (or the resume on restart) tries again
        logger.warning("could not reconcile %s %s/%s: %s", kind, namespace, owner, exc)
