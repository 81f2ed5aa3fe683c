"""``flotilla bench --suite reliability``: faults injected under steady load, every answer classified.

Engines killed and restarted, an engine hung, Redis killed and frozen, clients leaving at every stage and slow
readers; the report counts requests succeeded / failed with a clear error / unclear / hung / silently truncated
per fault phase, and the gateway's own in-flight counters and breaker states once the load drained.
"""

from bench.reliability.report import from_json, render, to_json
from bench.reliability.runner import ReliabilityResult, run_reliability
from bench.reliability.spec import ReliabilitySpec, full, quick

__all__ = [
    "ReliabilityResult",
    "ReliabilitySpec",
    "from_json",
    "full",
    "quick",
    "render",
    "run_reliability",
    "to_json",
]
