"""meshcast planner: the problem model, plan contract, port-v1 cost model and lower bound.

Pure data and geometry: no I/O, no torch, no solver imports.
"""

from meshcast.planner.errors import PlanFormatError, RequestError
from meshcast.planner.problem import Problem, build_problem
from meshcast.planner.request import Request, parse_request

__all__ = [
    "PlanFormatError",
    "Problem",
    "Request",
    "RequestError",
    "build_problem",
    "parse_request",
]
