"""The emulated cluster: pure parts everywhere; namespaces, links and a measured bench where
this machine allows them (root, iproute2, network namespaces), skipped with the reason if not."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from meshcast.api.cli import main
from meshcast.planner import build_problem, parse_request
from meshcast.solver import SolveOptions, make_plan
from meshcast.testbed import network
from meshcast.testbed.bench import bench, calibrated, spec_for
from meshcast.testbed.launch import run_job

ONE_TO_FOUR: dict[str, Any] = {
    # one sender, two receiving hosts of two: the paper's one-to-many shape, small
    "tensors": [
        {
            "name": "x",
            "shape": [2048, 2048],
            "dtype": "float32",
            "src": {"mesh": "a", "placements": ["R"]},
            "dst": {"mesh": "b", "placements": ["R", "R"]},
        }
    ],
    "meshes": {
        "a": {"shape": [1], "devices": [0]},
        "b": {"shape": [2, 2], "devices": [1, 2, 3, 4]},
    },
    "cluster": {
        "hosts": [[0], [1, 2], [3, 4]],
        "nic_gbps": 10,
        "nics_per_host": 1,
        "intra_gbps": 100,
        "latency_us": 10,
    },
}


def test_spec_and_calibrated_request() -> None:
    request = parse_request(
        {**ONE_TO_FOUR, "cluster": {**ONE_TO_FOUR["cluster"], "nics_per_host": 2}}
    )
    spec = spec_for(request, "x", nic_gbps=0.5, latency_us=20)
    assert spec.num_hosts == 3 and spec.host_gbps == 1.0  # two rails share the host's link
    assert spec.host_of == {0: 0, 1: 1, 2: 1, 3: 2, 4: 2}
    assert spec.namespace(2) == "meshcast-x-h2" and spec.switch == "meshcast-x-sw"
    model = calibrated(request, {"nic_gbps": 0.9, "intra_gbps": 12.0, "latency_us": 150.0})
    assert model["cluster"]["nic_gbps"] == pytest.approx(0.45)  # per rail
    assert model["cluster"]["intra_gbps"] == 12.0 and model["cluster"]["latency_us"] == 150.0
    assert network.host_address(0) == "10.213.0.1" and network.host_address(251) == "10.213.1.2"


@pytest.mark.parametrize("name", ["", "a/b", "../x", "-x", "a b", "x" * 33])
def test_bad_testbed_names_are_refused(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(network.TestbedError, match="testbed name"):
        network.check_name(name)
    with pytest.raises(network.TestbedError, match="testbed name"):
        spec_for(parse_request(ONE_TO_FOUR), name, nic_gbps=0.5, latency_us=0)
    with pytest.raises(SystemExit) as exit_:
        main(["testbed", "down", f"--name={name}"])
    assert exit_.value.code == 2
    assert f"argument --name: testbed name {name!r}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--nic-gbps", "0"),
        ("--nic-gbps", "nan"),
        ("--latency-us", "-5"),
        ("--latency-us", "nan"),
        ("--time-limit", "-1"),
        ("--time-limit", "inf"),
    ],
)
def test_bad_testbed_figures_are_refused(
    option: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request = tmp_path / "request.json"
    request.write_text(json.dumps(ONE_TO_FOUR))
    assert main(["testbed", "bench", str(request), option, value, "--name", "pytestbad"]) == 2
    assert f"meshcast: error: {option}: expected" in capsys.readouterr().err


def _testbed_or_skip() -> None:
    try:
        network.check_available()
    except network.TestbedError as err:
        pytest.skip(f"no testbed here: {err}")


def test_up_status_down_are_idempotent() -> None:
    _testbed_or_skip()
    spec = spec_for(parse_request(ONE_TO_FOUR), "pytest", nic_gbps=0.5, latency_us=0)
    try:
        network.up(spec)
        network.up(spec)  # replaces, does not fail
        assert len(network.namespaces("pytest")) == 4  # switch and three hosts
        status = network.status("pytest")
        assert "meshcast-pytest-h1  10.213.0.2  ranks [1, 2]" in status
        # a TCP connection from host 0 to host 2 crosses the switch
        server_code = (
            "import socket; s = socket.socket(); s.bind(('', 5000)); s.listen(); "
            "c, _ = s.accept(); c.sendall(b'across')"
        )
        server = subprocess.Popen(
            ["ip", "netns", "exec", spec.namespace(2), sys.executable, "-c", server_code]
        )
        client_code = (
            "import socket, time\n"
            "for _ in range(50):\n"
            "    try:\n"
            f"        c = socket.create_connection(('{network.host_address(2)}', 5000), 2); break\n"
            "    except OSError: time.sleep(0.1)\n"
            "print(c.recv(16).decode())"
        )
        client = subprocess.run(
            ["ip", "netns", "exec", spec.namespace(0), sys.executable, "-c", client_code],
            capture_output=True,
            text=True,
            timeout=30,
        )
        server.wait(timeout=30)
        assert client.stdout.strip() == "across", client.stderr
        # a testbed whose name starts with this one's is a different testbed
        network.up(spec_for(parse_request(ONE_TO_FOUR), "pytest-b", nic_gbps=0.5, latency_us=0))
        assert len(network.namespaces("pytest")) == 4
        assert len(network.down("pytest-b")) == 4
    finally:
        network.down("pytest-b")
        assert len(network.down("pytest")) == 4
    assert network.down("pytest") == []
    assert network.status("pytest") == "testbed 'pytest' is down"


def test_a_failing_rank_is_reported_and_stops_the_others() -> None:
    _testbed_or_skip()
    spec = spec_for(parse_request(ONE_TO_FOUR), "pytestfail", nic_gbps=0.5, latency_us=0)
    network.up(spec)
    try:
        bad_plan = {"format": "meshcast.plan/v1", "transfers": "nonsense"}
        job = {
            "world_size": 5,
            "timeout_s": 30,
            "repeats": 1,
            "request": ONE_TO_FOUR,
            "runs": [{"plan": bad_plan, "mode": "chain", "chunk_bytes": 1 << 20}],
        }
        started = time.monotonic()
        with pytest.raises(network.TestbedError) as failure:
            run_job(spec, job, timeout_s=60)
        # Every rank refuses the plan; whichever is seen first is reported with its reason.
        assert re.search(r"rank [0-4] failed", str(failure.value))
        assert "transfers: expected a list, got str" in str(failure.value)
        assert time.monotonic() - started < 60  # stopped, not timed out
    finally:
        network.down("pytestfail")


def test_measured_times_follow_the_model() -> None:
    _testbed_or_skip()
    request = parse_request(copy.deepcopy(ONE_TO_FOUR))  # 16 MiB to 4 GPUs on 2 hosts
    calibration, results = bench(
        request, ["sendrecv", "broadcast-lb"], name="pytestbench", nic_gbps=0.5, repeats=3
    )
    assert network.namespaces("pytestbench") == []  # torn down
    assert calibration["nic_gbps"] == pytest.approx(0.5, rel=0.2)
    by_name = {r.algorithm: r for r in results}
    for result in results:
        assert result.verified
        assert 0.75 <= result.measured_s / result.predicted_s <= 1.33, result
    measured = by_name["sendrecv"].measured_s / by_name["broadcast-lb"].measured_s
    predicted = by_name["sendrecv"].predicted_s / by_name["broadcast-lb"].predicted_s
    assert predicted > 1.5 and measured >= predicted / 2


def test_a_cut_link_makes_every_rank_raise_naming_a_peer(tmp_path: Path) -> None:
    """The link of host 2 (ranks 3 and 4) goes down mid-run (`ip link set eth0 down` in its
    namespace): every rank raises within the executor's timeout plus a few seconds, the ones
    cut off and the ones that lost them, each naming the peer it waited on."""
    _testbed_or_skip()
    timeout_s = 6.0
    request = copy.deepcopy(ONE_TO_FOUR)
    request["tensors"][0]["shape"] = [4096, 4096]  # 64 MiB: a run takes a second or more
    plan = make_plan(build_problem(parse_request(request)), "greedy", SolveOptions())
    spec = spec_for(parse_request(request), "pytestcut", nic_gbps=0.5, latency_us=0)
    marker = tmp_path / "a-run-went-through"
    network.up(spec)
    try:
        job = {
            "world_size": 5,
            "timeout_s": 60,
            "repeats": 1,
            "runs": [],
            "function": "tests.testbed.link_job:run_until_it_fails",
            "args": [request, plan.to_json(), timeout_s, 100, str(marker)],
        }
        cut: list[float] = []

        def cut_later() -> None:
            deadline = time.monotonic() + 100
            while not marker.exists() and time.monotonic() < deadline:
                time.sleep(0.05)  # until a whole run has gone through
            time.sleep(0.3)  # into the next one
            subprocess.run(
                ["ip", "netns", "exec", spec.namespace(2), "ip", "link", "set", "eth0", "down"],
                check=True,
            )
            cut.append(time.time())

        cutter = threading.Thread(target=cut_later)
        cutter.start()
        answers = [a["result"] for a in run_job(spec, job, timeout_s=120)]
        cutter.join()
    finally:
        network.down("pytestcut")
    for rank, answer in enumerate(answers):
        assert answer["error"] is not None, (rank, answer)  # no partial run taken as success
        assert answer["at"] - cut[0] < timeout_s + 5, (rank, answer["at"] - cut[0])
        if answer["peer"] is not None:
            assert f"rank {answer['peer']}" in answer["error"]
    assert all(a["runs"] >= 1 for a in answers), answers  # cut mid-run, not in set-up
    # a rank in a transfer with the cut host names its peer; one that met the loss in the next
    # run's collective check names the ranks the job's store stopped hearing from
    for a in answers:
        assert a["peer"] is not None or "rank 3 silent" in a["error"], a
    assert answers[3]["peer"] is not None and answers[4]["peer"] is not None, answers
    assert any("rank 3 silent" in a["error"] or "rank 4 silent" in a["error"] for a in answers)
