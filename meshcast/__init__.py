"""meshcast: cross-mesh resharding, planned as broadcasts and run inside torch.distributed.

The package maps the repository's folders: `meshcast.planner` (the problem model, plans, the
port-v1 cost model and bound; pure), `meshcast.solver` (the algorithms), `meshcast.executor`
(runs a plan; needs torch), `meshcast.api` (command line, service, client),
`meshcast.pipeline` (schedules and their simulator) and `meshcast.testbed` (emulated hosts).

The names most callers need are importable from here. They load on first use, so importing
`meshcast` for planning does not import torch (the executor's extra) or the service's packages.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "PlanFormatError": "meshcast.planner.errors",
    "RequestError": "meshcast.planner.errors",
    "Problem": "meshcast.planner.problem",
    "build_problem": "meshcast.planner.problem",
    "Request": "meshcast.planner.request",
    "parse_request": "meshcast.planner.request",
    "Plan": "meshcast.planner.plan",
    "Transfer": "meshcast.planner.plan",
    "Piece": "meshcast.planner.plan",
    "SolveStatus": "meshcast.planner.plan",
    "Fused": "meshcast.planner.fused",
    "SolveOptions": "meshcast.solver.base",
    "ALGORITHMS": "meshcast.solver.registry",
    "make_plan": "meshcast.solver.registry",
    "plan_request": "meshcast.solver.registry",
    "Executor": "meshcast.executor.executor",
    "InvalidPlanError": "meshcast.executor.agreement",
    "PlanMismatchError": "meshcast.executor.agreement",
    "execute": "meshcast.executor.executor",
    "TransferError": "meshcast.executor.executor",
    "Refit": "meshcast.executor.refit",
    "RefitMismatchError": "meshcast.executor.refit_verify",
    "reshard": "meshcast.executor.dtensor",
    "MeshStage": "meshcast.executor.pipeline_stage",
    "StageTensor": "meshcast.executor.pipeline_stage",
    "ScheduleEager1F1B": "meshcast.executor.pipeline_schedules",
    "MeshcastClient": "meshcast.api.client",
}

__all__ = [
    "ALGORITHMS",
    "Executor",
    "Fused",
    "InvalidPlanError",
    "MeshStage",
    "MeshcastClient",
    "Piece",
    "Plan",
    "PlanFormatError",
    "PlanMismatchError",
    "Problem",
    "Refit",
    "RefitMismatchError",
    "Request",
    "RequestError",
    "ScheduleEager1F1B",
    "SolveOptions",
    "SolveStatus",
    "StageTensor",
    "Transfer",
    "TransferError",
    "build_problem",
    "execute",
    "make_plan",
    "parse_request",
    "plan_request",
    "reshard",
]

if TYPE_CHECKING:
    from meshcast.api.client import MeshcastClient
    from meshcast.executor.agreement import InvalidPlanError, PlanMismatchError
    from meshcast.executor.dtensor import reshard
    from meshcast.executor.executor import Executor, TransferError, execute
    from meshcast.executor.pipeline_schedules import ScheduleEager1F1B
    from meshcast.executor.pipeline_stage import MeshStage, StageTensor
    from meshcast.executor.refit import Refit
    from meshcast.executor.refit_verify import RefitMismatchError
    from meshcast.planner.errors import PlanFormatError, RequestError
    from meshcast.planner.fused import Fused
    from meshcast.planner.plan import Piece, Plan, SolveStatus, Transfer
    from meshcast.planner.problem import Problem, build_problem
    from meshcast.planner.request import Request, parse_request
    from meshcast.solver.base import SolveOptions
    from meshcast.solver.registry import ALGORITHMS, make_plan, plan_request


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'meshcast' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
