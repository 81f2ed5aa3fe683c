"""Structural OpenAPI v3 schemas for CRDs, derived from the pydantic models' JSON Schema.

Kubernetes accepts only *structural* schemas (apiextensions.k8s.io/v1): every node has a ``type`` (or is
int-or-string / preserve-unknown-fields), no ``$ref``, no ``anyOf`` with types, no ``additionalProperties``
next to ``properties``, OpenAPI 3.0 spelling of exclusive bounds. pydantic emits JSON Schema 2020-12, so this
module rewrites it: refs are inlined, ``X | None`` becomes an optional ``X``, class docstrings and field
descriptions become ``description`` (what ``kubectl explain`` prints), and objects whose fields all have
defaults get a default built from their fields' defaults, so an omitted section is filled in whole (a bare
``{}`` would not be: the API server validates defaults, CEL rules included, without nested defaulting).
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

Schema = dict[str, Any]

_DROP = ("title", "$defs")


def structural(model: type[BaseModel], *, keep_defaults: bool = True) -> Schema:
    """The structural schema of ``model`` (by alias). ``keep_defaults=False`` drops defaults (for status)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    return _convert(raw, defs, keep_defaults=keep_defaults)


def _resolve(node: Schema, defs: dict[str, Schema]) -> Schema:
    """Inline ``$ref`` and collapse ``anyOf: [X, null]``; sibling keys win over the referenced schema's."""
    node = dict(node)
    while "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**copy.deepcopy(target), **node}
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if node.get("x-kubernetes-int-or-string"):
            node.pop("anyOf")
        elif len(options) == 1:
            node.pop("anyOf")
            node = {**_resolve(options[0], defs), **node}
        else:  # pragma: no cover - a model author's error, caught by the CRD tests
            raise ValueError(f"non-structural union in schema: {node['anyOf']}")
    return node


def _convert(node: Schema, defs: dict[str, Schema], *, keep_defaults: bool) -> Schema:
    node = _resolve(node, defs)
    for key in _DROP:
        node.pop(key, None)
    if node.get("x-kubernetes-int-or-string"):
        node.pop("type", None)
    if "default" in node and (node["default"] is None or not keep_defaults):
        node.pop("default")
    if "exclusiveMinimum" in node and not isinstance(node["exclusiveMinimum"], bool):
        node["minimum"], node["exclusiveMinimum"] = node["exclusiveMinimum"], True
    if "exclusiveMaximum" in node and not isinstance(node["exclusiveMaximum"], bool):
        node["maximum"], node["exclusiveMaximum"] = node["exclusiveMaximum"], True
    if "properties" in node:
        node.pop("additionalProperties", None)
        node["type"] = "object"
        required = set(node.get("required", ()))
        props: Schema = {}
        for name, sub in node["properties"].items():
            converted = _convert(sub, defs, keep_defaults=keep_defaults)
            if (
                keep_defaults
                and name not in required
                and converted.get("type") == "object"
                and "properties" in converted
                and "default" not in converted
                and not converted.get("required")
            ):
                implied = {k: v["default"] for k, v in converted["properties"].items() if "default" in v}
                converted = dict(sorted({**converted, "default": implied}.items()))
            props[name] = converted
        node["properties"] = props
    elif node.get("x-kubernetes-preserve-unknown-fields"):
        node.pop("additionalProperties", None)
        node["type"] = "object"
    elif isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = _convert(
            node["additionalProperties"], defs, keep_defaults=keep_defaults
        )
    if isinstance(node.get("items"), dict):
        node["items"] = _convert(node["items"], defs, keep_defaults=keep_defaults)
    return dict(sorted(node.items()))
