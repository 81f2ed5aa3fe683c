"""A plan as text (``flotilla optimize``) and as JSON (``--json``, what a controller or a script consumes)."""

from __future__ import annotations

from typing import Any

from optimizer.ilp import Plan


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    w = plan.workload
    best = plan.best_single
    return {
        "slo": plan.slo.model_dump(),
        "model": w.model,
        "total_rate": w.total,
        "cost_per_hour": plan.cost,
        "counts": plan.counts,
        "prices": plan.prices,
        "load": plan.load,
        "best_single": None if best is None else {"gpu": best[0], "cost_per_hour": best[1]},
        "single_costs": plan.single,
        "saving": plan.saving,
        "input_bounds": list(w.input_bounds),
        "output_bounds": list(w.output_bounds),
        "split": {g: [list(r) for r in m] for g, m in plan.split.items() if plan.counts[g] > 0},
        "solve_seconds": plan.solve_seconds,
        "slice_factor": plan.slice_factor,
    }


def render(plan: Plan) -> str:
    w = plan.workload
    lines = [
        f"SLO {plan.slo.label()}; workload {w.total:.3g} req/s" + (f" of {w.model}" if w.model else ""),
        "",
        f"{'GPU type':<12} {'count':>5} {'load':>7} {'$/h':>9}",
    ]
    for g, n in sorted(plan.counts.items(), key=lambda kv: -kv[1]):
        if n:
            lines.append(f"{g:<12} {n:>5} {plan.load[g]:>7.2f} {n * plan.prices[g]:>9.2f}")
    lines.append(
        f"{'total':<12} {sum(plan.counts.values()):>5} {sum(plan.load.values()):>7.2f} {plan.cost:>9.2f}"
    )
    best = plan.best_single
    if best is not None:
        saving = plan.saving or 0.0
        verdict = f"the mix saves {saving:.0%}" if saving > 1e-9 else "one type is already the cheapest"
        lines.append(f"best single type: {best[0]} at ${best[1]:.2f}/h; {verdict}")
    else:
        lines.append("no single GPU type can serve every bucket within the SLO")
    lines += ["", "bucket (input ≤, output ≤)   req/s   served by"]
    for i, ib in enumerate(w.input_bounds):
        for j, ob in enumerate(w.output_bounds):
            rate = w.rate[i][j]
            if rate <= 0:
                continue
            parts = [f"{g} {m[i][j]:.0%}" for g, m in plan.split.items() if m[i][j] > 0]
            lines.append(f"{f'({ib}, {ob})':<28} {rate:>6.3g}   {', '.join(parts)}")
    lines.append(f"\nsolved in {plan.solve_seconds * 1000:.0f} ms (slice factor {plan.slice_factor})")
    return "\n".join(lines)
