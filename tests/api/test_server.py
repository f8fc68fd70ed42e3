"""`meshcast serve` as real processes: plans, repeats and restarts, bad input over the wire,
single flight under concurrency (one worker, several workers, replicas on one Redis)."""

from __future__ import annotations

import copy
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshcast.api.client import MeshcastClient
from meshcast.planner.synthetic import shared_like_request
from tests.api.server import free_port, running_server
from tests.conftest import CASES_DIR, load_case

SMALL = load_case("paper-1tom-1x2")


def solved_count(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        float(v) for v in re.findall(r"^meshcast_plans_solved_total\{[^}]*\} (\S+)$", text, re.M)
    )


def _concurrent_posts(url: str, request: dict[str, Any], count: int) -> list[httpx.Response]:
    with ThreadPoolExecutor(count) as pool:
        return list(
            pool.map(
                lambda _: httpx.post(f"{url}/v1/plans", json=request, timeout=120), range(count)
            )
        )


def test_held_out_requests_are_planned_valid_cached_and_survive_a_restart(
    tmp_path: Path, plancheck: Any
) -> None:
    cache = str(tmp_path / "plans.sqlite3")
    rng = random.Random(9090)
    requests = [shared_like_request(rng, kind) for kind in ("paper", "modern", "paper")]
    for request in requests:
        request["options"] = {"time_limit_s": 1.0}
    first: list[dict[str, Any]] = []
    with running_server("--cache", cache) as url:
        for request in requests:
            response = httpx.post(f"{url}/v1/plans", json=request, timeout=120)
            assert response.status_code == 200 and response.headers["x-cache"] == "miss"
            plan = response.json()
            verdict = plancheck.check(request, plan)
            assert verdict["valid"], verdict["errors"]
            first.append(plan)
            repeat = httpx.post(f"{url}/v1/plans", json=request, timeout=120)
            assert repeat.headers["x-cache"] == "hit" and repeat.json() == plan
    with running_server("--cache", cache) as url:  # a restart keeps every plan
        for request, plan in zip(requests, first, strict=True):
            response = httpx.post(f"{url}/v1/plans", json=request, timeout=120)
            assert response.headers["x-cache"] == "hit" and response.json() == plan
        assert solved_count(url) == 0


def test_bad_input_over_the_wire_is_4xx_json_and_the_server_stays_healthy(tmp_path: Path) -> None:
    bad_bodies: list[bytes] = [
        b"{not json",  # malformed JSON
        b'"a string"',  # JSON, not an object
        b'{"tensors": "x"}',  # wrong type
        b" " * (30 << 20),  # a 30 MB body
    ]
    with running_server("--cache", str(tmp_path / "c.sqlite3")) as url:
        for body in bad_bodies:
            response = httpx.post(
                f"{url}/v1/plans",
                content=body,
                headers={"content-type": "application/json"},
                timeout=60,
            )
            assert 400 <= response.status_code < 500, (body[:20], response.status_code)
            assert "detail" in response.json()
        unknown_algorithm = copy.deepcopy(SMALL)
        unknown_algorithm["options"] = {"algorithm": "quantum"}
        response = httpx.post(f"{url}/v1/plans", json=unknown_algorithm, timeout=30)
        assert response.status_code == 422
        assert response.json()["detail"]["field"] == "options.algorithm"
        assert httpx.get(f"{url}/healthz", timeout=5).json()["status"] == "ok"
        assert httpx.post(f"{url}/v1/plans", json=SMALL, timeout=60).status_code == 200


def test_sixteen_identical_concurrent_requests_are_solved_once(tmp_path: Path) -> None:
    request = copy.deepcopy(load_case("paper-n2m-case6"))
    request["options"] = {"time_limit_s": 1.0}
    with running_server("--cache", str(tmp_path / "c.sqlite3")) as url:
        responses = _concurrent_posts(url, request, 16)
        assert all(r.status_code == 200 for r in responses)
        assert len({r.text for r in responses}) == 1
        assert sorted(r.headers["x-cache"] for r in responses) == ["hit"] * 15 + ["miss"]
        assert solved_count(url) == 1


def test_several_workers_share_the_cache_and_solve_once(tmp_path: Path) -> None:
    request = copy.deepcopy(load_case("paper-n2m-case3"))
    request["options"] = {"time_limit_s": 1.0}
    with running_server("--cache", str(tmp_path / "c.sqlite3"), "--workers", "2") as url:
        responses = _concurrent_posts(url, request, 16)
        assert all(r.status_code == 200 for r in responses)
        assert [r.headers["x-cache"] for r in responses].count("miss") == 1
        assert solved_count(url) == 1  # summed over both workers


def test_client_retries_and_falls_back(tmp_path: Path) -> None:
    with (
        running_server("--cache", str(tmp_path / "c.sqlite3")) as url,
        MeshcastClient(url) as client,
    ):
        plan = client.plan(SMALL)
        assert client.cached(plan.request_id) == plan
        assert [
            row["algorithm"] for row in client.compare({**SMALL, "options": {"time_limit_s": 0.2}})
        ]
    with MeshcastClient(url, retries=1, timeout_s=2) as client:  # the server is gone now
        from meshcast.planner import parse_request

        request = parse_request(SMALL)
        started = time.monotonic()
        assert client.plan_request(request).request_id == request.request_id
        assert time.monotonic() - started < 30


def test_replicas_on_one_redis_solve_once_and_share_plans(redis_url: str) -> None:
    request = copy.deepcopy(load_case("paper-n2m-case5"))
    request["options"] = {"time_limit_s": 1.0}
    with running_server("--cache", redis_url) as a, running_server("--cache", redis_url) as b:
        with ThreadPoolExecutor(16) as pool:
            urls = [a, b] * 8
            responses = list(
                pool.map(lambda u: httpx.post(f"{u}/v1/plans", json=request, timeout=120), urls)
            )
        assert all(r.status_code == 200 for r in responses)
        assert [r.headers["x-cache"] for r in responses].count("miss") == 1
        assert solved_count(a) + solved_count(b) == 1
        plan = responses[0].json()
        assert httpx.get(f"{b}/v1/plans/{plan['request_id']}", timeout=10).json() == plan
    with running_server("--cache", redis_url) as c:  # a new replica sees the plan too
        assert httpx.post(f"{c}/v1/plans", json=request, timeout=60).headers["x-cache"] == "hit"


def test_unreachable_redis_is_one_line_exit_2() -> None:
    from meshcast.api.cli import main

    assert main(["serve", "--cache", f"redis://127.0.0.1:{free_port()}/0"]) == 2


def test_plan_command_asks_the_server_and_falls_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from meshcast.api.cli import main

    case = str(CASES_DIR / "paper-1tom-1x2.json")
    with running_server("--cache", str(tmp_path / "c.sqlite3")) as url:
        assert main(["plan", case, "--server", url, "-o", str(tmp_path / "p.json")]) == 0
        assert solved_count(url) == 1
        assert main(["plan", case, "--server", url]) == 0
        assert solved_count(url) == 1  # the second came from the cache
    capsys.readouterr()
    assert main(["plan", case, "--server", url]) == 0  # the server is gone
    assert "planning locally" in capsys.readouterr().err
    for not_a_service in ("localhost:8000", "ftp://localhost", "http://"):
        assert main(["plan", case, "--server", not_a_service]) == 2
        expected = f"--server: expected an http:// or https:// URL, got {not_a_service!r}"
        assert expected in capsys.readouterr().err
