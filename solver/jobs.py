"""The optimizers' decisions: every job of every item with its alternatives, the greedy's
choice first (their hint, and what they fall back on)."""

from __future__ import annotations

from collections.abc import Sequence

from meshcast.planner.problem import Problem
from meshcast.solver.greedy import route_all
from meshcast.solver.items import Item
from meshcast.solver.recipes import Job, item_jobs


def jobs_with_hint(problem: Problem, items: Sequence[Item]) -> list[Job]:
    """Every job's alternatives (the full enumeration of `solver.recipes`), the recipe the
    greedy chose for that job first, matched by the job's key."""
    jobs: list[Job] = []
    for i, routed in enumerate(route_all(problem, items)):
        hints = {job.key: recipe for job, recipe in routed}
        for job in item_jobs(problem, i, items[i]):
            hint = hints[job.key]
            jobs.append(Job(i, (hint, *(r for r in job.recipes if r != hint)), job.key))
    return jobs
