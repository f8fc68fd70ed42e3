"""Helpers shared by the benchmarks: the reference checker, cases, tables and result files."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHARED = ROOT.parent / "shared"


def load_plancheck() -> ModuleType | None:
    """The independent reference checker, when `../shared/tools/plancheck.py` is there."""
    path = SHARED / "tools" / "plancheck.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("plancheck", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["plancheck"] = module
    spec.loader.exec_module(module)
    return module


def geomean(values: Sequence[float]) -> float:
    finite = [v for v in values if v > 0 and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in finite) / len(finite)) if finite else math.nan


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "-" if math.isnan(value) else f"{value:.3f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, markdown: str, data: Any) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text(markdown + "\n")
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=1))
    return RESULTS / f"{name}.md"
