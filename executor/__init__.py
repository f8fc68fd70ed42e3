"""meshcast executor: runs a `meshcast.plan/v1` inside a torch.distributed job (DESIGN §5)."""

from executor.run import PlanMismatchError, execute, plan_fingerprint

__all__ = ["PlanMismatchError", "execute", "plan_fingerprint"]
