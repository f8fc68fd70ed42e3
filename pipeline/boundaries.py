"""Transfer times of stage boundaries from their cross-mesh plans.

A boundary is the request that moves stage i's activations to stage i+1's layout; its
gradients travel the other way, the same tensors from the destination layout back to the
source layout (`reversed_request`). Both are planned; their makespans are the transfer times.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.simulate import Timing
from planner.plan import Plan
from planner.request import Request, parse_request


def reversed_request(request: Request) -> Request:
    """The gradients' request: every tensor from its destination layout to its source layout."""
    data = copy.deepcopy(request.to_json())
    for tensor in data["tensors"]:
        tensor["src"], tensor["dst"] = tensor["dst"], tensor["src"]
    return parse_request(data)


def boundary_timing(
    forward_s: Sequence[float],
    backward_s: Sequence[float],
    boundaries: Sequence[Request],
    plan: Callable[[Request], Plan],
) -> tuple[Timing, list[dict[str, Any]]]:
    """Timing with every boundary's activation and gradient plan makespans, and a summary of
    those plans."""
    activation, gradient, summary = [], [], []
    for k, request in enumerate(boundaries):
        forward_plan, backward_plan = plan(request), plan(reversed_request(request))
        activation.append(forward_plan.makespan_s)
        gradient.append(backward_plan.makespan_s)
        summary.append(
            {
                "boundary": k,
                "activation_s": forward_plan.makespan_s,
                "gradient_s": backward_plan.makespan_s,
                "activation_request_id": forward_plan.request_id,
                "gradient_request_id": backward_plan.request_id,
            }
        )
    return Timing(list(forward_s), list(backward_s), activation, gradient), summary
