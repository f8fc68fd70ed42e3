"""Transfer times of stage boundaries from their cross-mesh plans.

A boundary is the request that moves stage i's activations to stage i+1's layout; its
gradients travel the other way, the same tensors from the destination layout back to the
source layout (`reversed_request`). Both are planned; their makespans are the transfer times.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

from meshcast.pipeline.simulate import Timing
from meshcast.planner.plan import Plan
from meshcast.planner.request import Request, parse_request


def reversed_request(request: Request) -> Request:
    """The gradients' request: every tensor from its destination layout to its source layout."""
    data = copy.deepcopy(request.to_json())
    for tensor in data["tensors"]:
        tensor["src"], tensor["dst"] = tensor["dst"], tensor["src"]
    return parse_request(data)


def boundary_timing(
    forward_s: Sequence[float],
    backward_s: Sequence[float],
    plans: Sequence[tuple[Plan, Plan]],
) -> tuple[Timing, list[dict[str, Any]]]:
    """Timing with every boundary's activation and gradient plan makespans (`plans`: per
    boundary, the plan of its request and of `reversed_request`), and a summary of them."""
    summary = [
        {
            "boundary": k,
            "activation_s": ahead.makespan_s,
            "gradient_s": back.makespan_s,
            "activation_request_id": ahead.request_id,
            "gradient_request_id": back.request_id,
        }
        for k, (ahead, back) in enumerate(plans)
    ]
    activation = [ahead.makespan_s for ahead, _ in plans]
    gradient = [back.makespan_s for _, back in plans]
    return Timing(list(forward_s), list(backward_s), activation, gradient), summary


def plan_boundaries(
    boundaries: Sequence[Request], plan: Callable[[Request], Plan]
) -> list[tuple[Plan, Plan]]:
    """Each boundary's activation plan and gradient plan."""
    return [(plan(request), plan(reversed_request(request))) for request in boundaries]
