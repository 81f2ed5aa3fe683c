"""The gateway's per-model demand: the contract between the gateway that exports it and the autoscaler.

When a model has zero ready pods, no engine exists to report a queue, so the only evidence of demand is the
requests the gateway is holding for it. The gateway exports two gauges per model on its ``/metrics``; the
autoscaler scrapes every gateway replica and adds them up. Neither side imports the other: both import the
names and the parser from here.

- ``flotilla_gateway_model_queued_requests{model}`` — requests held because no ready endpoint serves the model
  (scale from zero, an adapter being loaded or re-placed);
- ``flotilla_gateway_model_in_flight_requests{model}`` — requests dispatched to an engine and not finished.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["IN_FLIGHT_METRIC", "QUEUED_METRIC", "ModelDemand", "parse_demand"]

QUEUED_METRIC: Final = "flotilla_gateway_model_queued_requests"
IN_FLIGHT_METRIC: Final = "flotilla_gateway_model_in_flight_requests"


@dataclass(frozen=True, slots=True)
class ModelDemand:
    queued: float = 0.0
    in_flight: float = 0.0

    @property
    def total(self) -> float:
        return self.queued + self.in_flight

    def __add__(self, other: ModelDemand) -> ModelDemand:
        return ModelDemand(self.queued + other.queued, self.in_flight + other.in_flight)


def parse_demand(text: str) -> dict[str, ModelDemand]:
    """Per-model demand from one gateway's ``/metrics`` page (series of one model are summed).

    Only the two demand families are parsed: lines are filtered by prefix first, because a gateway's page is
    mostly histogram buckets. Malformed demand lines raise ``ValueError`` (from the Prometheus parser).
    """
    wanted = [line for line in text.splitlines() if line.startswith((QUEUED_METRIC, IN_FLIGHT_METRIC))]
    out: dict[str, ModelDemand] = {}
    for family in text_string_to_metric_families("\n".join(wanted) + "\n"):
        for sample in family.samples:
            model = sample.labels.get("model")
            if model is None:
                continue
            add = (
                ModelDemand(queued=sample.value)
                if sample.name == QUEUED_METRIC
                else ModelDemand(in_flight=sample.value)
            )
            out[model] = out.get(model, ModelDemand()) + add
    return out
