"""The service soak, shortened (`benchmarks/service_soak.py --quick`): mixed load from four
clients with solver processes killed on a timer and the service killed once with SIGKILL."""

from __future__ import annotations

import json

import pytest

from benchmarks.service_soak import main

pytestmark = pytest.mark.slow


def test_a_short_soak_answers_only_2xx_4xx_503_and_loses_no_plan(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--quick", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result["classes"]) <= {"2xx", "4xx", "503"}, result["classes"]
    assert result["classes"]["2xx"] >= result["requests"] * 0.8, result["classes"]
    assert result["plans_answered_before_the_kill"] > 0 and result["plans_lost"] == []
    assert result["solvers_killed"] >= 1 and result["solver_restarts"] >= 1
    assert len(result["lives"]) == 2  # the kill and the restart happened
