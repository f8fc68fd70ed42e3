"""meshcast executor: runs a `meshcast.plan/v1` inside a torch.distributed job (DESIGN §5)."""

from meshcast.executor.executor import (
    MODES,
    Executor,
    InvalidPlanError,
    PlanMismatchError,
    execute,
    plan_fingerprint,
)

__all__ = [
    "MODES",
    "Executor",
    "InvalidPlanError",
    "PlanMismatchError",
    "execute",
    "plan_fingerprint",
]
