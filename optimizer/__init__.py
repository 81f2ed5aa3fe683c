"""Flotilla's GPU optimizer: the cheapest mix of GPU types that serves a workload within an SLO (Mélange).

Pure code, no I/O besides reading its input files and, for profiling a live engine, HTTP to that engine:

- :class:`Profile`, :class:`Workload`, :class:`Slo`, :class:`Prices` — the inputs (JSON files, pydantic);
- :class:`RateSearch` — the highest rate within the SLO per request size, over injected load probes;
- :func:`profile_gpu` — a GPU type's profile from a :data:`LoadProbe` (``http_probe`` for a live engine);
- :func:`solve` — the integer program (SciPy/HiGHS) → :class:`Plan` (GPUs per type, bucket split, cost);
- ``DEFAULT_PRICES`` — on-demand hourly prices per GPU type, sources in :mod:`optimizer.prices`.

``flotilla profile`` and ``flotilla optimize`` drive these; docs/optimizer.md has the formulation.
"""

from optimizer.errors import Infeasible, InputError, OptimizerError
from optimizer.ilp import Plan, solve
from optimizer.live_probe import http_probe
from optimizer.model import Grid, Prices, Profile, ProfileTable, Slo, Workload, load_json, validated
from optimizer.observed import observe, workload_from_counts
from optimizer.prices import DEFAULT_PRICES
from optimizer.profiling import LoadProbe, Outcomes, profile_gpu
from optimizer.report import plan_to_dict, render
from optimizer.search import RateSearch, attainment

__all__ = [
    "DEFAULT_PRICES",
    "Grid",
    "Infeasible",
    "InputError",
    "LoadProbe",
    "OptimizerError",
    "Outcomes",
    "Plan",
    "Prices",
    "Profile",
    "ProfileTable",
    "RateSearch",
    "Slo",
    "Workload",
    "attainment",
    "http_probe",
    "load_json",
    "observe",
    "plan_to_dict",
    "profile_gpu",
    "render",
    "solve",
    "validated",
    "workload_from_counts",
]
