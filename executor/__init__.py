"""meshcast executor: runs a `meshcast.plan/v1` inside a torch.distributed job (DESIGN §5)."""

from meshcast.executor.agreement import InvalidPlanError, PlanMismatchError, plan_fingerprint
from meshcast.executor.executor import MODES, Executor, TransferError, execute

__all__ = [
    "MODES",
    "Executor",
    "InvalidPlanError",
    "PlanMismatchError",
    "TransferError",
    "execute",
    "plan_fingerprint",
]
