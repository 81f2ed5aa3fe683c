"""Building blocks shared by the three Flotilla resources: camelCase models, conditions, opaque objects.

The pydantic models are the one source of truth for the API: the CRD schemas in ``charts/flotilla/crds`` are
generated from them (``flotilla.crds.schema``), and the operator parses objects it reads with the same models.
Field names are snake_case in Python and camelCase on the wire, like every Kubernetes API.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "flotilla.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

#: marker understood by the schema generator: an object whose fields Kubernetes keeps as they come
#: (pod-spec fragments, env vars, tolerations). Their meaning is Kubernetes', validated when the operator's
#: Deployment is applied, so restating those schemas here would only drift from upstream.
PRESERVE = {"x-kubernetes-preserve-unknown-fields": True}

#: ``int | str`` quantities such as ``cpu: 4`` or ``memory: 16Gi``
INT_OR_STRING = {"x-kubernetes-int-or-string": True}

OpaqueObject = Annotated[dict[str, Any], Field(json_schema_extra=PRESERVE)]
Quantity = Annotated[int | str, Field(json_schema_extra=INT_OR_STRING)]

#: lowercase RFC 1123 label (Kubernetes object names, routing profile names)
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors (the schema is structural)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Condition(ApiModel):
    """A standard Kubernetes condition (the shape of ``metav1.Condition``)."""

    type: str = Field(description="Condition type, e.g. Available, Progressing, Degraded.", max_length=316)
    status: Literal["True", "False", "Unknown"] = Field(description="Status of the condition.")
    reason: str = Field(default="", description="CamelCase reason for the last transition.", max_length=1024)
    message: str = Field(default="", description="Human-readable detail.", max_length=32768)
    last_transition_time: str | None = Field(
        default=None,
        description="When the status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation this condition was computed for."
    )


def condition_list() -> Any:
    """A conditions field: a list map keyed by ``type`` so server-side apply merges conditions by type."""
    return Field(
        default_factory=list,
        description="Latest observations of the object's state.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        max_length=16,
    )
