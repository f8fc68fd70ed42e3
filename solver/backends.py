"""Solvers that need an optional package, imported when first asked for.

OR-Tools (`cpsat`) and PuLP (`milp`) are dependencies of the distribution, but a deployment may
leave one out (a slim image, a platform without wheels): the other algorithms keep working, and
asking for a missing one is a one-line error naming the package.
"""

from __future__ import annotations

import importlib
from typing import Any

#: function name -> (module, the package it needs)
BACKENDS: dict[str, tuple[str, str]] = {
    "cpsat_routing": ("meshcast.solver.cpsat", "ortools"),
    "milp_routing": ("meshcast.solver.milp", "pulp"),
}


class MissingBackend(ImportError):
    """An algorithm whose package is not installed."""


def backend(name: str) -> Any:
    """The function `name` of its solver module; `MissingBackend` naming the package when it
    cannot be imported."""
    module, package = BACKENDS[name]
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as err:
        raise MissingBackend(
            f"{name.split('_')[0]} needs the Python package {package!r}, which is not installed "
            f"here (pip install {package}): {err}"
        ) from None
