"""meshcast solvers: one interface (`Algorithm`), one result type, one plan builder."""

from meshcast.solver.base import SolveOptions, SolveResult
from meshcast.solver.registry import ALGORITHMS, make_plan, plan_request, resolve

__all__ = ["ALGORITHMS", "SolveOptions", "SolveResult", "make_plan", "plan_request", "resolve"]
