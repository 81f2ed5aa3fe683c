"""The optimizer's inputs, as files: SLOs, GPU profiles, workload histograms and prices (pydantic at the edge).

All three inputs share one bucket grid (``input_bounds`` × ``output_bounds``, upper bounds in tokens, see
:mod:`flotilla.sizes`); the solver refuses inputs whose grids differ rather than guessing a mapping.

* A **profile** is what ``flotilla profile`` measured for one GPU type: for each SLO it was asked about, the
  highest request rate (req/s) one engine sustains within that SLO, per bucket (0 = cannot meet it at all).
* A **workload** is the request rate per bucket (req/s), e.g. from the gateway's size counter over a window.
* **Prices** are dollars per GPU-hour per GPU type (:mod:`optimizer.prices` has the default list).
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from optimizer.errors import InputError


class Slo(BaseModel):
    """Per-request latency objective: a request attains it when both bounds hold (``None`` = unbounded).

    ``attainment`` is the share of requests that must attain it for a load to count as "within the SLO".
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    ttft: float | None = Field(default=None, gt=0)
    tpot: float | None = Field(default=None, gt=0)
    attainment: float = Field(default=0.99, gt=0, le=1)

    @model_validator(mode="after")
    def _some_bound(self) -> Slo:
        if self.ttft is None and self.tpot is None:
            raise ValueError("an SLO needs ttft or tpot")
        return self

    def met(self, ttft: float | None, tpot: float | None) -> bool:
        if ttft is None or tpot is None:
            return False
        return (self.ttft is None or ttft <= self.ttft) and (self.tpot is None or tpot <= self.tpot)

    def label(self) -> str:
        parts = [
            f"ttft={self.ttft:g}s" if self.ttft else "",
            f"tpot={self.tpot * 1000:g}ms" if self.tpot else "",
        ]
        return ",".join(p for p in parts if p) + f"@{self.attainment:.1%}"

    @classmethod
    def parse(cls, text: str) -> Slo:
        """``tpot=0.04,ttft=2,attainment=0.99`` (seconds; ``ms`` suffix accepted) → :class:`Slo`."""
        values: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, raw = part.partition("=")
            if not sep or key not in ("ttft", "tpot", "attainment"):
                raise InputError(
                    f"bad SLO part {part!r}: expected ttft=SECONDS, tpot=SECONDS or attainment=F"
                )
            try:
                values[key] = float(raw[:-2]) / 1000 if raw.endswith("ms") else float(raw)
            except ValueError:
                raise InputError(f"bad SLO value {raw!r} for {key}") from None
        return _validated(cls, values, "SLO")


class Grid(BaseModel):
    """The bucket grid: strictly increasing positive upper bounds on both axes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_bounds: tuple[int, ...] = Field(min_length=1)
    output_bounds: tuple[int, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _increasing(self) -> Grid:
        for name, bounds in (("input_bounds", self.input_bounds), ("output_bounds", self.output_bounds)):
            if bounds[0] < 1 or any(b <= a for a, b in itertools.pairwise(bounds)):
                raise ValueError(f"{name} must be positive and strictly increasing")
        return self

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.input_bounds), len(self.output_bounds)

    def same_grid(self, other: Grid) -> bool:
        return (self.input_bounds, self.output_bounds) == (other.input_bounds, other.output_bounds)


def _check_matrix(grid: Grid, matrix: tuple[tuple[float, ...], ...], what: str) -> None:
    rows, cols = grid.shape
    if len(matrix) != rows or any(len(r) != cols for r in matrix):
        raise ValueError(f"{what} must be {rows} rows (input buckets) × {cols} columns (output buckets)")
    if any(not math.isfinite(v) or v < 0 for r in matrix for v in r):
        raise ValueError(f"{what} must hold finite, non-negative numbers")


class ProfileTable(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    slo: Slo
    #: max_rate[i][j]: req/s one engine sustains within the SLO for input bucket i, output bucket j
    max_rate: tuple[tuple[float, ...], ...]


class Profile(Grid):
    """One GPU type's measured capacity under one or more SLOs."""

    gpu: str = Field(min_length=1)
    #: what was measured (an engine URL, or ``engine_sim:<preset>``) and the model it served
    engine: str = ""
    model: str = ""
    tables: tuple[ProfileTable, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _tables(self) -> Profile:
        for t in self.tables:
            _check_matrix(self, t.max_rate, "max_rate")
        return self

    def table(self, slo: Slo | None) -> ProfileTable:
        if slo is None:
            if len(self.tables) > 1:
                raise InputError(f"profile {self.gpu} has several SLOs; choose one with --slo")
            return self.tables[0]
        for t in self.tables:
            if t.slo == slo:
                return t
        have = ", ".join(t.slo.label() for t in self.tables)
        raise InputError(f"profile {self.gpu} has no table for SLO {slo.label()} (it has: {have})")


class Workload(Grid):
    """Request rate (req/s) per size bucket."""

    model: str = ""
    #: rate[i][j]: req/s of requests in input bucket i and output bucket j
    rate: tuple[tuple[float, ...], ...]

    @model_validator(mode="after")
    def _rates(self) -> Workload:
        _check_matrix(self, self.rate, "rate")
        return self

    @property
    def total(self) -> float:
        return sum(sum(r) for r in self.rate)


class Prices(BaseModel):
    """Dollars per GPU-hour per GPU type."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    per_hour: dict[str, float]

    @model_validator(mode="after")
    def _positive(self) -> Prices:
        if any(not math.isfinite(v) or v <= 0 for v in self.per_hour.values()):
            raise ValueError("prices must be positive")
        return self


M = TypeVar("M", bound=BaseModel)


def _validated(model: type[M], data: Any, what: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(f"bad {what}: {where + ': ' if where else ''}{first['msg']}") from None


def load_json(model: type[M], path: Path, what: str) -> M:
    """Read and validate one input file; any problem becomes a one-line :class:`InputError`."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} {path} is not JSON: {exc.msg} at line {exc.lineno}") from None
    return _validated(model, data, f"{what} {path}")


def validated(model: type[M], data: Any, what: str) -> M:
    return _validated(model, data, what)
