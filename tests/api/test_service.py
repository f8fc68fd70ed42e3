"""The planning service: HTTP contract, cache, bad input, and a real uvicorn process."""

from __future__ import annotations

import copy
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.client import MeshcastClient, ServiceError, ServiceUnavailable
from api.settings import Settings
from tests.conftest import load_case

CASE = load_case("paper-n2m-case6")


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    app = create_app(Settings(cache_path=tmp_path / "cache.sqlite3", max_time_limit_s=5.0))
    with TestClient(app) as test_client:
        yield test_client


def test_plan_is_computed_then_cached(client: TestClient) -> None:
    first = client.post("/v1/plans", json=CASE)
    assert first.status_code == 200
    body = first.json()
    assert body["cached"] is False and body["plan"]["format"] == "meshcast.plan/v1"
    again = client.post("/v1/plans", json=json.loads(json.dumps(CASE, sort_keys=True)))
    assert again.json() == {"cached": True, "plan": body["plan"]}
    by_id = client.get(f"/v1/plans/{body['plan']['request_id']}")
    assert by_id.status_code == 200 and by_id.json()["plan"] == body["plan"]
    assert client.get("/health").json() == {"status": "ok", "cached_plans": 1}


def test_check_route(client: TestClient) -> None:
    plan = client.post("/v1/plans", json=CASE).json()["plan"]
    verdict = client.post("/v1/check", json={"request": CASE, "plan": plan}).json()
    assert verdict["valid"] and verdict["makespan_s"] == pytest.approx(plan["makespan_s"])
    plan["transfers"] = plan["transfers"][:1]
    assert not client.post("/v1/check", json={"request": CASE, "plan": plan}).json()["valid"]


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        (lambda r: r["tensors"][0].update(dtype="complex"), "tensors[0].dtype", "unknown dtype"),
        (
            lambda r: r.update(options={"algorithm": "magic"}),
            "options.algorithm",
            "unknown algorithm",
        ),
        (
            lambda r: r.update(options={"time_limit_s": 50}),
            "options.time_limit_s",
            "over this service's limit",
        ),
        (lambda r: r["cluster"].update(hosts=[[0]]), "meshes.dst.devices[0]", "on no host"),
    ],
)
def test_bad_requests_name_the_field(client: TestClient, change, field: str, fragment: str) -> None:  # type: ignore[no-untyped-def]
    request = copy.deepcopy(CASE)
    change(request)
    response = client.post("/v1/plans", json=request)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail["field"] == field and fragment in detail["message"]


def test_non_json_and_unknown_plan(client: TestClient) -> None:
    response = client.post(
        "/v1/plans", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422 and "field" in response.json()["detail"]
    assert client.post("/v1/plans", json=[1, 2]).status_code == 422
    assert client.get("/v1/plans/abc").status_code == 404
    assert client.get("/v1/algorithms").json()["auto"]


def test_cache_survives_restart(tmp_path: Path) -> None:
    settings = Settings(cache_path=tmp_path / "cache.sqlite3")
    with TestClient(create_app(settings)) as first:
        plan = first.post("/v1/plans", json=CASE).json()["plan"]
    with TestClient(create_app(settings)) as second:
        assert second.get(f"/v1/plans/{plan['request_id']}").json()["plan"] == plan


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_real_server_and_client(tmp_path: Path) -> None:
    port = _free_port()
    env = {"MESHCAST_CACHE": str(tmp_path / "cache.sqlite3"), "PATH": "/usr/bin:/bin"}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app", "--port", str(port)],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    client = MeshcastClient(f"http://127.0.0.1:{port}", timeout_s=60)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client.health()
                break
            except ServiceUnavailable:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail(
                        f"server did not start: {server.stderr.read() if server.stderr else ''}"
                    )
                time.sleep(0.2)
        plan = client.plan(CASE)
        assert plan.ratio < 1.01 and client.check(CASE, plan)["valid"]
        assert client.cached(plan.request_id) == plan
        with pytest.raises(ServiceError) as info:
            client.plan({**CASE, "meshes": {}})
        assert info.value.status == 422 and info.value.field == "meshes"
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=10)


def test_client_plans_locally_when_the_service_is_unreachable() -> None:
    from planner import parse_request

    client = MeshcastClient(f"http://127.0.0.1:{_free_port()}", timeout_s=5)
    with pytest.raises(ServiceUnavailable, match=r"127\.0\.0\.1"):
        client.health()
    request = parse_request(CASE)
    plan = client.plan_request(request)
    assert plan.request_id == request.request_id and plan.transfers
    client.close()
