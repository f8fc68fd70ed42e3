"""`meshcast serve` as real processes: plans, repeats and restarts, bad input over the wire,
single flight under concurrency (one worker, several workers, replicas on one Redis)."""

from __future__ import annotations

import copy
import os
import random
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshcast.api.client import MeshcastClient
from meshcast.planner.synthetic import shared_like_request
from tests.api.server import SERVER_PIDS, cpu_ticks, descendants, free_port, running_server
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


@pytest.mark.slow
def test_a_plan_request_never_waits_behind_comparisons(tmp_path: Path) -> None:
    """Default settings: comparisons run in their own lane (one process, two pending); a third
    distinct one is refused with 503 and Retry-After at once, and a greedy plan request is
    answered while the other two still run."""
    compares = []
    for seed in range(3):
        request = copy.deepcopy(load_case("refit-fsdp32-to-tp2x8"))
        request["options"] = {"time_limit_s": 4.0, "seed": seed}
        compares.append(request)
    plan = copy.deepcopy(SMALL)
    plan["options"] = {"algorithm": "greedy"}
    with (
        running_server("--cache", str(tmp_path / "c.sqlite3")) as url,
        ThreadPoolExecutor(3) as pool,
    ):
        running = [
            pool.submit(httpx.post, f"{url}/v1/compare", json=r, timeout=300) for r in compares[:2]
        ]
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/healthz", timeout=10).json()["comparing"] < 2:
            assert time.monotonic() < deadline, "the two comparisons were never admitted"
            time.sleep(0.05)
        refused = httpx.post(f"{url}/v1/compare", json=compares[2], timeout=30)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "compare lane is full" in refused.json()["detail"]["message"]
        answered = httpx.post(f"{url}/v1/plans", json=plan, timeout=60)
        assert answered.status_code == 200, answered.text
        still = httpx.get(f"{url}/healthz", timeout=10).json()["comparing"]
        assert still >= 1 and not all(f.done() for f in running)  # it did not wait for them
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert 'meshcast_admissions_total{lane="compare",outcome="rejected"} 1.0' in metrics
        assert all(f.result().status_code == 200 for f in running)


@pytest.mark.slow
def test_a_solver_killed_mid_solve_fails_only_its_request_and_is_replaced(tmp_path: Path) -> None:
    """A long solve's process is killed while short solves queue and run beside it: the long
    one gets 503 with Retry-After, every other one its plan, and the next request a new pool."""
    long = copy.deepcopy(load_case("dgx-boundary-2x8-to-2x8"))
    long["options"] = {"algorithm": "cpsat", "time_limit_s": 30.0}  # runs to its limit
    shorts = []
    for seed in range(12):
        request = copy.deepcopy(SMALL)
        request["options"] = {"algorithm": "greedy", "seed": seed}
        shorts.append(request)
    with (
        running_server("--cache", str(tmp_path / "c.sqlite3")) as url,
        ThreadPoolExecutor(13) as pool,
    ):
        solvers = descendants(SERVER_PIDS[url])
        before = {pid: cpu_ticks(pid) for pid in solvers}
        for _ in range(120):  # until the warm-up's imports are done: every process idle
            time.sleep(0.5)
            now = {pid: cpu_ticks(pid) for pid in solvers}
            idle, before = all(now[p] - before[p] <= 2 for p in solvers), now
            if idle:
                break
        doomed = pool.submit(httpx.post, f"{url}/v1/plans", json=long, timeout=120)
        time.sleep(3.0)  # the long solve is running: its process is the busy one
        busy = max(solvers, key=lambda pid: cpu_ticks(pid) - before[pid])
        others = [pool.submit(httpx.post, f"{url}/v1/plans", json=r, timeout=120) for r in shorts]
        time.sleep(0.2)
        os.kill(busy, signal.SIGKILL)
        answer = doomed.result()
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1", answer.text
        assert "solver process running this request died" in answer.json()["detail"]["message"]
        assert [f.result().status_code for f in others] == [200] * len(shorts)
        after = copy.deepcopy(SMALL)
        after["options"] = {"algorithm": "greedy", "seed": 99}
        assert httpx.post(f"{url}/v1/plans", json=after, timeout=60).status_code == 200
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert 'meshcast_solver_restarts_total{lane="plan"} 1.0' in metrics
