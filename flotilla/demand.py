"""The gateway's per-model demand: the contract between the gateway that exports it and the autoscaler.

When a model has zero ready pods, no engine exists to report a queue, so the only evidence of demand is the
requests the gateway is holding for it. The gateway exports two gauges per model on its ``/metrics``; the
autoscaler scrapes every gateway replica and adds them up. Neither side imports the other: both import the
names and the parser from here.

- ``flotilla_gateway_model_queued_requests{model}`` — requests held because no ready endpoint serves the model
  (scale from zero, an adapter being loaded or re-placed);
- ``flotilla_gateway_model_in_flight_requests{model}`` — requests dispatched to an engine and not finished;
- ``flotilla_gateway_model_arrivals_total{model}`` — requests that arrived for the model (counted once routable
  or held), a counter: its rate is the offered load, which — unlike queue lengths — does not swell while new
  pods are still starting, so a fleet sized on it does not overshoot after a cold start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["ARRIVALS_METRIC", "IN_FLIGHT_METRIC", "QUEUED_METRIC", "ModelDemand", "parse_demand"]

QUEUED_METRIC: Final = "flotilla_gateway_model_queued_requests"
IN_FLIGHT_METRIC: Final = "flotilla_gateway_model_in_flight_requests"
ARRIVALS_METRIC: Final = "flotilla_gateway_model_arrivals_total"


@dataclass(frozen=True, slots=True)
class ModelDemand:
    queued: float = 0.0
    in_flight: float = 0.0
    #: cumulative arrivals (a counter: take the difference between two scrapes for a rate)
    arrivals: float = 0.0

    @property
    def total(self) -> float:
        return self.queued + self.in_flight

    def __add__(self, other: ModelDemand) -> ModelDemand:
        return ModelDemand(
            self.queued + other.queued, self.in_flight + other.in_flight, self.arrivals + other.arrivals
        )


def parse_demand(text: str) -> dict[str, ModelDemand]:
    """Per-model demand from one gateway's ``/metrics`` page (series of one model are summed).

    Only the two demand families are parsed: lines are filtered by prefix first, because a gateway's page is
    mostly histogram buckets. Malformed demand lines raise ``ValueError`` (from the Prometheus parser).
    """
    wanted = [
        line
        for line in text.splitlines()
        if line.startswith((QUEUED_METRIC, IN_FLIGHT_METRIC, ARRIVALS_METRIC))
        and not line.startswith(ARRIVALS_METRIC.removesuffix("_total") + "_created")
    ]
    out: dict[str, ModelDemand] = {}
    for family in text_string_to_metric_families("\n".join(wanted) + "\n"):
        for sample in family.samples:
            model = sample.labels.get("model")
            if model is None:
                continue
            if sample.name == QUEUED_METRIC:
                add = ModelDemand(queued=sample.value)
            elif sample.name == IN_FLIGHT_METRIC:
                add = ModelDemand(in_flight=sample.value)
            elif sample.name == ARRIVALS_METRIC:
                add = ModelDemand(arrivals=sample.value)
            else:
                continue
            out[model] = out.get(model, ModelDemand()) + add
    return out
