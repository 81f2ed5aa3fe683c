"""The optimizer's errors. Each message is one line a CLI can print as is.

``OptimizerError``
  ├── ``InputError``   — a profile, workload, price list or SLO is malformed or they do not fit together
  └── ``Infeasible``   — no GPU type can serve some bucket within the SLO, or the solver found no plan
"""

from __future__ import annotations


class OptimizerError(Exception):
    """Base of the optimizer's errors."""


class InputError(OptimizerError):
    """Bad or inconsistent input."""


class Infeasible(OptimizerError):
    """No plan meets the SLO with the GPU types given."""
