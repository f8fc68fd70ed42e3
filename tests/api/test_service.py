"""The planning service in process: HTTP contract, cache, limits and every kind of bad input."""

from __future__ import annotations

import copy
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meshcast.api.app import create_app
from meshcast.api.cli import main as cli_main
from meshcast.api.settings import Settings, SettingsError
from meshcast.planner import parse_request
from meshcast.planner.summary import SUMMARY_KEYS
from meshcast.planner.synthetic_scale import moe_refit_at_scale
from tests.conftest import load_case

CASE = load_case("paper-n2m-case6")
SMALL = load_case("paper-1tom-1x2")


def settings_for(tmp_path: Path, **changes: Any) -> Settings:
    """Solving on threads keeps in-process tests quick; the real server tests use processes."""
    base = {
        "cache_url": str(tmp_path / "cache.sqlite3"),
        "max_time_limit_s": 5.0,
        "solver_processes": 0,
        "warm_up": False,
    }
    return Settings(**{**base, **changes})  # type: ignore[arg-type]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(tmp_path)), raise_server_exceptions=False) as test:
        yield test


def test_plan_is_solved_once_then_a_hit(client: TestClient) -> None:
    first = client.post("/v1/plans", json=CASE)
    assert first.status_code == 200 and first.headers["x-cache"] == "miss"
    plan = first.json()  # request in, plan out
    assert plan["format"] == "meshcast.plan/v1" and plan["transfers"]
    assert first.headers["x-request-id"] == plan["request_id"] == parse_request(CASE).request_id
    again = client.post("/v1/plans", json=json.loads(json.dumps(CASE, sort_keys=True)))
    assert again.headers["x-cache"] == "hit" and again.json() == plan
    by_id = client.get(f"/v1/plans/{plan['request_id']}")
    assert by_id.status_code == 200 and by_id.json() == plan
    assert by_id.headers["x-cache"] == "hit" and by_id.headers["x-request-id"] == plan["request_id"]
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["cached_plans"] == 1 and health["solving"] == 0


def test_metrics_count_requests_hits_misses_and_solves(client: TestClient) -> None:
    for _ in range(3):
        client.post("/v1/plans", json=SMALL)
    client.post("/v1/plans", json={"tensors": []})
    text = client.get("/metrics").text
    assert 'meshcast_plans_solved_total{algorithm="auto"} 1.0' in text
    assert "meshcast_cache_hits_total 2.0" in text
    assert "meshcast_cache_misses_total 1.0" in text
    assert 'meshcast_http_requests_total{method="POST",route="/v1/plans",status="200"} 3.0' in text
    assert 'meshcast_http_requests_total{method="POST",route="/v1/plans",status="422"} 1.0' in text
    assert "meshcast_solve_seconds_count 1.0" in text
    assert 'meshcast_http_request_duration_seconds_bucket{le="0.005",method="POST"' in text


def test_compare_summarises_every_algorithm(client: TestClient) -> None:
    request = copy.deepcopy(SMALL)
    request["options"] = {"time_limit_s": 0.3}
    body = client.post("/v1/compare", json=request).json()
    names = [row["algorithm"] for row in body["algorithms"]]
    assert names == list(client.get("/v1/algorithms").json())
    assert all(row["ratio"] >= 1 - 1e-9 for row in body["algorithms"])


def test_json_sent_without_its_content_type_is_accepted(client: TestClient) -> None:
    as_json = client.post("/v1/plans", json=SMALL)
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        raw = client.post(
            "/v1/plans", content=json.dumps(SMALL).encode(), headers={"content-type": content_type}
        )
        assert raw.status_code == 200 and raw.json() == as_json.json()
    body = {"stages": 2, "microbatches": 4, "forward_ms": 1, "backward_ms": 2, "comm_ms": 1}
    schedule = client.post("/v1/schedules", content=json.dumps(body).encode())
    assert schedule.status_code == 200, schedule.text


def test_check_route(client: TestClient) -> None:
    plan = client.post("/v1/plans", json=CASE).json()
    verdict = client.post("/v1/check", json={"request": CASE, "plan": plan}).json()
    assert verdict["valid"] and verdict["makespan_s"] == pytest.approx(plan["makespan_s"])
    plan["transfers"] = plan["transfers"][:1]
    assert not client.post("/v1/check", json={"request": CASE, "plan": plan}).json()["valid"]


def test_check_route_and_cli_check_give_the_same_summary(
    client: TestClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = client.post("/v1/plans", json=CASE).json()
    plan["transfers"] = plan["transfers"][1:]  # an invalid plan: errors are summarised alike
    served = client.post("/v1/check", json={"request": CASE, "plan": plan}).json()
    (tmp_path / "request.json").write_text(json.dumps(CASE))
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    assert cli_main(["check", str(tmp_path / "request.json"), str(tmp_path / "plan.json")]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert list(served) == list(printed) == list(SUMMARY_KEYS)
    assert served == printed and not served["valid"] and served["errors"]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change to a copy of CASE: set the value at a dotted path (list indices as digits)."""

    def change(request: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = request
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value

    return change


BAD_REQUESTS = [
    # wrong dtype name
    (_set("tensors.0.dtype", "complex"), "tensors[0].dtype", "unknown dtype"),
    # wrong type for a shape
    (_set("tensors.0.shape", "big"), "tensors[0].shape", "valid list"),
    # negative dimension
    (_set("tensors.0.shape", [-4, 8]), "tensors[0].shape[0]", "greater than or equal"),
    # absurd size: petabytes
    (_set("tensors.0.shape", [1 << 30, 1 << 30, 1 << 30]), "tensors[0].shape", "bytes"),
    # a mesh nobody defined
    (_set("tensors.0.src.mesh", "nowhere"), "tensors[0].src.mesh", "unknown mesh"),
    # placement naming a missing tensor dim
    (_set("tensors.0.dst.placements", ["S(7)", "R"]), "tensors[0].dst.placements[0]", "dim"),
    # partial placements are not supported
    (_set("tensors.0.src.placements", ["P", "R"]), "tensors[0].src.placements[0]", "partial"),
    # placements count differs from the mesh's axes
    (_set("tensors.0.src.placements", ["R"]), "tensors[0].src.placements", "axes"),
    # mesh shape does not match its device count
    (_set("meshes.src.shape", [3, 3]), "meshes.src", "devices"),
    # a device on no host
    (_set("cluster.hosts", [[0]]), "meshes", "on no host"),
    # a device on two hosts
    (_set("cluster.hosts", [list(range(20)), [0]]), "cluster.hosts[1][0]", "already on host"),
    # zero bandwidth
    (_set("cluster.nic_gbps", 0), "cluster.nic_gbps", "greater than or equal to 0.001"),
    # bandwidth as text
    (_set("cluster.nic_gbps", "fast"), "cluster.nic_gbps", "valid number"),
    # unknown algorithm
    (_set("options", {"algorithm": "magic"}), "options.algorithm", "unknown algorithm"),
    # a time limit over the service's cap
    (_set("options", {"time_limit_s": 50}), "options.time_limit_s", "over this service's limit"),
    # an unknown top-level field
    (_set("colour", "blue"), "colour", "Extra inputs"),
]


@pytest.mark.parametrize(("change", "field", "fragment"), BAD_REQUESTS)
def test_bad_requests_name_the_field(
    client: TestClient, change: Callable[[dict[str, Any]], None], field: str, fragment: str
) -> None:
    request = copy.deepcopy(CASE)
    change(request)
    response = client.post("/v1/plans", json=request)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail["field"].startswith(field), detail
    assert fragment.lower() in detail["message"].lower(), detail
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("send", "status", "field"),
    [
        # malformed JSON
        (
            lambda c: c.post(
                "/v1/plans", content=b"{nope", headers={"content-type": "application/json"}
            ),
            422,
            "body",
        ),
        # not JSON, sent without a JSON content type (curl -d)
        (lambda c: c.post("/v1/plans", content=b"nope"), 422, "body"),
        (lambda c: c.post("/v1/schedules", content=b"\xff\xfe"), 422, "body"),
        # JSON that is not an object
        (lambda c: c.post("/v1/plans", json=[1, 2]), 422, "request"),
        # an empty object
        (lambda c: c.post("/v1/plans", json={}), 422, "tensors"),
        # a request id that is not one
        (lambda c: c.get("/v1/plans/abc"), 422, "request_id"),
        # a well-formed id nobody planned
        (lambda c: c.get("/v1/plans/" + "0" * 64), 404, "request_id"),
        # check without a plan
        (lambda c: c.post("/v1/check", json={"request": CASE}), 422, "body"),
        # compare with a bad request
        (lambda c: c.post("/v1/compare", json={"tensors": 3}), 422, "tensors"),
    ],
)
def test_malformed_calls_are_4xx_json(
    client: TestClient, send: Callable[[TestClient], Any], status: int, field: str
) -> None:
    response = send(client)
    assert response.status_code == status, response.text
    assert response.json()["detail"]["field"].startswith(field)


def test_bodies_over_the_limit_are_413(tmp_path: Path) -> None:
    app = create_app(settings_for(tmp_path, max_body_bytes=1 << 20))
    with TestClient(app) as client:
        big = b'{"tensors": [' + b" " * (30 << 20) + b"]}"
        response = client.post(
            "/v1/plans", content=big, headers={"content-type": "application/json"}
        )
        assert response.status_code == 413
        assert response.json()["detail"]["field"] == "body"

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
            for _ in range(40):
                yield b" " * (64 << 10)

        streamed = client.post(
            "/v1/plans", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        assert client.post("/v1/plans", json=SMALL).status_code == 200


def test_tensor_and_device_caps(tmp_path: Path) -> None:
    app = create_app(settings_for(tmp_path, max_tensors=1, max_devices=8))
    with TestClient(app) as client:
        two = copy.deepcopy(SMALL)
        two["tensors"].append({**two["tensors"][0], "name": "y"})
        response = client.post("/v1/plans", json=two)
        assert response.status_code == 422 and response.json()["detail"]["field"] == "tensors"
        response = client.post("/v1/plans", json=CASE)  # 20 devices
        assert response.status_code == 422 and response.json()["detail"]["field"] == "cluster.hosts"
        plan = {"format": "meshcast.plan/v1", "transfers": []}
        response = client.post("/v1/check", json={"request": CASE, "plan": plan})
        assert response.status_code == 422
        assert response.json()["detail"]["field"] == "request.cluster.hosts"


def test_work_over_the_limits_is_refused_before_planning(tmp_path: Path) -> None:
    app = create_app(settings_for(tmp_path, max_tiles=1, max_solve_bytes=1 << 30))
    with TestClient(app) as client:
        response = client.post("/v1/plans", json=CASE)
        assert response.status_code == 422
        detail = response.json()["detail"]
        assert detail["field"] == "tensors" and "over the limit of 1" in detail["message"]
        huge = copy.deepcopy(SMALL)
        huge["cluster"]["nics_per_host"] = 2**63
        response = client.post("/v1/plans", json=huge)
        assert response.status_code == 422
        assert response.json()["detail"]["field"] == "cluster.nics_per_host"
        assert client.get("/healthz").json()["cached_plans"] == 0


def test_default_limits_admit_a_per_expert_refit(tmp_path: Path, plancheck: Any) -> None:
    refit = moe_refit_at_scale(
        num_layers=8, hidden=256, q_dim=256, kv_dim=64, ffn=128, num_experts=64,
        vocab=1024, num_stages=2, stage_dp=1, num_engines=2,
    )  # fmt: skip
    assert len(refit["tensors"]) > 1024  # the old default limit
    defaults = Settings()
    app = create_app(settings_for(tmp_path, max_time_limit_s=defaults.max_time_limit_s))
    with TestClient(app) as client:
        response = client.post("/v1/plans", json=refit)
        assert response.status_code == 200, response.text
        verdict = plancheck.check(refit, response.json())
        assert verdict["valid"], verdict["errors"]


def test_cache_survives_restart(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    with TestClient(create_app(settings)) as first:
        plan = first.post("/v1/plans", json=CASE).json()
    with TestClient(create_app(settings)) as second:
        response = second.post("/v1/plans", json=CASE)
        assert response.headers["x-cache"] == "hit" and response.json() == plan


def test_a_corrupt_cache_file_is_set_aside_and_the_service_starts(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with TestClient(create_app(settings_for(tmp_path))) as client:
        health = client.get("/healthz").json()
        assert health["cached_plans"] == 0
        assert health["cache_set_aside"].startswith(str(path) + ".corrupt-")
        assert client.post("/v1/plans", json=SMALL).status_code == 200
    assert Path(health["cache_set_aside"]).read_bytes().startswith(b"this is not")
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_openapi_docs_are_served(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/plans", "/v1/plans/{request_id}", "/v1/compare", "/healthz", "/metrics"} <= set(
        paths
    )


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHCAST_CACHE", "redis://cache:6379/0")
    monkeypatch.setenv("MESHCAST_SOLVER_PROCESSES", "4")
    monkeypatch.setenv("MESHCAST_WARM_UP", "no")
    settings = Settings.from_env()
    assert settings.cache_url == "redis://cache:6379/0"
    assert settings.solver_processes == 4 and settings.warm_up is False
    monkeypatch.setenv("MESHCAST_WARM_UP", "ture")  # misspelt: an error, not a silent False
    with pytest.raises(SettingsError, match=r"^MESHCAST_WARM_UP: .*valid boolean.*'ture'"):
        Settings.from_env()
    monkeypatch.setenv("MESHCAST_WARM_UP", "off")
    monkeypatch.setenv("MESHCAST_MAX_BODY_BYTES", "64MiB")
    with pytest.raises(SettingsError, match=r"^MESHCAST_MAX_BODY_BYTES: .*integer.*'64MiB'"):
        Settings.from_env()
    monkeypatch.setenv("MESHCAST_MAX_BODY_BYTES", "-1")
    with pytest.raises(SettingsError, match=r"^MESHCAST_MAX_BODY_BYTES: .*greater than or equal"):
        Settings.from_env()


def test_serve_refuses_a_bad_setting_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MESHCAST_MAX_TENSORS", "many")
    code = cli_main(["serve", "--cache", str(tmp_path / "c.sqlite3"), "--port", "8799"])
    assert code == 2
    assert capsys.readouterr().err.strip().startswith("meshcast: error: MESHCAST_MAX_TENSORS:")


def test_schedules_priced_by_boundary_plans(client: TestClient) -> None:
    boundary = copy.deepcopy(SMALL)
    boundary["options"] = {"time_limit_s": 0.3}
    body = {
        "stages": 2,
        "microbatches": 8,
        "forward_ms": 10,
        "backward_ms": [20, 25],
        "boundaries": [boundary],
    }
    answer = client.post("/v1/schedules", json=body)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert set(data["results"]) == {"gpipe", "1f1b", "eager-1f1b"}
    activation = data["boundaries"][0]["activation_s"]
    plan = client.get(f"/v1/plans/{data['boundaries'][0]['activation_request_id']}").json()
    assert activation == plan["makespan_s"]  # the boundary's plan, now cached
    assert data["results"]["eager-1f1b"]["peak_inflight"] == [3, 1]
    given = client.post(
        "/v1/schedules",
        json={
            "stages": 4,
            "microbatches": 16,
            "forward_ms": 10,
            "backward_ms": 20,
            "comm_ms": 5,
            "schedule": "1f1b",
        },
    ).json()
    assert given["results"]["1f1b"]["iteration_s"] == pytest.approx(0.71)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"stages": 0, "microbatches": 4, "forward_ms": 1, "backward_ms": 1}, "stages"),
        ({"stages": 2, "microbatches": 4, "forward_ms": [1], "backward_ms": 1}, "forward_ms"),
        (
            {"stages": 2, "microbatches": 4, "forward_ms": 1, "backward_ms": 1, "schedule": "x"},
            "schedule",
        ),
        (
            {
                "stages": 3,
                "microbatches": 4,
                "forward_ms": 1,
                "backward_ms": 1,
                "boundaries": [SMALL],
            },
            "boundaries",
        ),
        (
            {
                "stages": 2,
                "microbatches": 4,
                "forward_ms": 1,
                "backward_ms": 1,
                "boundaries": [{"tensors": []}],
            },
            "boundaries[0].",
        ),
        ({"stages": 2, "microbatches": 4, "forward_ms": 1, "backward_ms": 1, "extra": 1}, "extra"),
        ({"stages": 2, "microbatches": 4097, "forward_ms": 1, "backward_ms": 1}, "microbatches"),
        ({"stages": 256, "microbatches": 4096, "forward_ms": 1, "backward_ms": 1}, "microbatches"),
    ],
)
def test_bad_schedule_queries_name_the_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/schedules", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"]["field"].startswith(field)
