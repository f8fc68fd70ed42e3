"""What the `meshcast` subcommands share: reading inputs and reporting bad ones."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from meshcast.planner import RequestError, build_problem, parse_request
from meshcast.planner.bulk import collection_paused
from meshcast.planner.problem import Problem
from meshcast.planner.request import MAX_TIME_LIMIT_S
from meshcast.planner.work import check_work
from meshcast.solver import SolveOptions, resolve


class UsageError(Exception):
    """Input the user has to fix; reported as one line, exit status 2."""


def read_json(path: str, what: str) -> Any:
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise UsageError(f"cannot read {what} {path!r}: {err.strerror or err}") from None
    try:
        with collection_paused():
            return json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(f"{what} {path!r} is not JSON: {err.msg} at line {err.lineno}") from None


def load_problem(path: str) -> Problem:
    """The request at `path`, checked and within `planner.work`'s default limits."""
    try:
        request = parse_request(read_json(path, "request"))
        check_work(request)
        return build_problem(request)
    except RequestError as err:
        raise UsageError(f"invalid request {path!r}: {err}") from None


def solve_options(problem: Problem, args: argparse.Namespace) -> SolveOptions:
    defaults = problem.request.options
    limit = args.time_limit if args.time_limit is not None else defaults.time_limit_s
    if not 0 < limit <= MAX_TIME_LIMIT_S:
        raise UsageError(f"--time-limit: must be in (0, {MAX_TIME_LIMIT_S:g}] seconds, got {limit}")
    seed = args.seed if args.seed is not None else defaults.seed
    return SolveOptions(time_limit_s=limit, seed=seed)


def chosen_algorithm(problem: Problem, args: argparse.Namespace) -> str:
    """--algorithm, else the request's own; a name no solver has is a usage error."""
    algorithm: str = args.algorithm or problem.request.options.algorithm
    try:
        resolve(algorithm)
    except RequestError as err:
        raise UsageError(f"--algorithm: {err.message}") from None
    return algorithm
