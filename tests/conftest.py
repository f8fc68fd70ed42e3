"""Shared test fixtures: the shared benchmark cases and the independent reference checker."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from meshcast.planner import build_problem, parse_request
from meshcast.planner.problem import Problem

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CASES_DIR = SHARED / "cases"
CASE_FILES = sorted(CASES_DIR.glob("*.json"))
CASE_IDS = [p.stem for p in CASE_FILES]


def load_case(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CASES_DIR / f"{name}.json").read_text())
    return data


def problem_of(request: dict[str, Any]) -> Problem:
    return build_problem(parse_request(request))


@pytest.fixture(scope="session")
def plancheck() -> ModuleType:
    """`../shared/tools/plancheck.py`, imported from its path (it is not a package)."""
    path = SHARED / "tools" / "plancheck.py"
    if not path.exists():
        pytest.fail(f"reference checker missing at {path}")
    spec = importlib.util.spec_from_file_location("plancheck", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["plancheck"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
