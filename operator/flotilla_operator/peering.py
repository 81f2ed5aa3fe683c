"""kopf's peering CRDs: how two operator replicas agree that only one of them acts.

Each replica writes a heartbeat with its priority into a ``ClusterKopfPeering`` (cluster-wide operators) or
``KopfPeering`` (namespaced) object; replicas that see a higher-priority peer pause. The schema is kopf's
(kopf.dev/v1), reproduced here so the chart ships it next to Flotilla's own CRDs.
"""

from __future__ import annotations

from typing import Any

PEERING_GROUP = "kopf.dev"


def _crd(kind: str, plural: str, scope: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{PEERING_GROUP}",
            "labels": {"app.kubernetes.io/part-of": "flotilla"},
        },
        "spec": {
            "group": PEERING_GROUP,
            "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "kopf operator peering: heartbeats of the operator replicas.",
                            "properties": {
                                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                            },
                        }
                    },
                }
            ],
        },
    }


def manifests() -> list[dict[str, Any]]:
    return [
        _crd("ClusterKopfPeering", "clusterkopfpeerings", "Cluster"),
        _crd("KopfPeering", "kopfpeerings", "Namespaced"),
    ]


def peering_object(name: str) -> dict[str, Any]:
    return {"apiVersion": f"{PEERING_GROUP}/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
