"""The service image's contents, checked without a Docker engine.

The build stage of `docker/Dockerfile` copies a few folders and builds one wheel from them; the
image runs `meshcast serve` from that wheel with no torch. Here the same folders are copied, the
same wheel is built and installed into an empty folder, and the service is started from it alone
(`python -S`: the checkout and its editable install are not on the path, torch import fails)
and exercised: health check (the Dockerfile's own HEALTHCHECK command), a plan, a schedule.
"""

from __future__ import annotations

import copy
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.server import free_port, running_process
from tests.conftest import ROOT, load_case

DOCKERFILE = ROOT / "docker" / "Dockerfile"
NO_TORCH = 'raise ImportError("torch is not installed in the meshcast service image")\n'


def build_stage_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY in the Dockerfile's first (build) stage."""
    build_stage = re.split(r"^FROM ", DOCKERFILE.read_text(), flags=re.M)[1]
    copies = []
    for line in build_stage.splitlines():
        if line.startswith("COPY "):
            *sources, destination = shlex.split(line)[1:]
            assert not any(s.startswith("--") for s in sources), line
            copies.append((sources, destination))
    return copies


def healthcheck_code() -> str:
    """The Python code of the Dockerfile's HEALTHCHECK command."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*CMD python -c (\".*\")\s*$", text, flags=re.M)
    assert match, 'no `HEALTHCHECK ... CMD python -c "..."` line in docker/Dockerfile'
    return str(shlex.split(match.group(1))[0])


@pytest.fixture(scope="module")
def image_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding what the image's `pip install` puts in site-packages."""
    tmp = tmp_path_factory.mktemp("image")
    context = tmp / "src"
    context.mkdir()
    for sources, destination in build_stage_copies():
        for source in sources:
            path = ROOT / source
            target = context / destination
            if path.is_dir():
                shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(path, target)
    wheels, site = tmp / "wheels", tmp / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(wheels)]
    subprocess.run([*build, str(context)], check=True, cwd=tmp)
    (wheel,) = wheels.glob("meshcast-*.whl")
    install = [*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)]
    subprocess.run(install, check=True, cwd=tmp)
    (site / "torch").mkdir()
    (site / "torch" / "__init__.py").write_text(NO_TORCH)
    return site


def test_the_wheel_installs_one_meshcast_namespace(image_site: Path) -> None:
    """Only `meshcast` and its metadata land in site-packages (no generic top-level names such
    as `api` or `planner`), and every folder of the project is inside it."""
    # `--target` also puts the console script in bin/ (a venv's bin/, not site-packages)
    top = {p.name for p in image_site.iterdir()} - {"torch", "bin"}
    (info,) = [name for name in top if name.endswith(".dist-info")]
    assert top == {"meshcast", info}, sorted(top)
    packages = {p.parent.name for p in (image_site / "meshcast").glob("*/__init__.py")}
    assert packages == {"planner", "solver", "api", "executor", "pipeline", "testbed"}
    scripts = (image_site / info / "entry_points.txt").read_text()
    assert "meshcast = meshcast.api.cli:main" in scripts


@pytest.fixture(scope="module")
def image_service(image_site: Path) -> Iterator[str]:
    port = free_port()
    run = image_site.parent / "run"
    run.mkdir()
    start = (
        "import sys\n"
        f"sys.path[:0] = [{str(image_site)!r}]\n"
        f"sys.path.append({sysconfig.get_paths()['purelib']!r})\n"  # the dependencies only
        "from meshcast.api.cli import main\n"
        f"sys.exit(main(['serve', '--host', '127.0.0.1', '--port', '{port}',"
        " '--log-level', 'warning']))\n"
    )
    env = {"MESHCAST_CACHE": str(run / "plans.sqlite3")}
    with running_process([sys.executable, "-S", "-c", start], port, cwd=run, env=env) as url:
        yield url


def test_the_image_health_check_passes(image_service: str) -> None:
    port = image_service.rsplit(":", 1)[1]
    code = healthcheck_code()
    assert "127.0.0.1:8000" in code
    probe = subprocess.run(
        [sys.executable, "-c", code.replace(":8000", f":{port}")], capture_output=True, timeout=30
    )
    assert probe.returncode == 0, probe.stderr.decode()
    health = httpx.get(f"{image_service}/healthz", timeout=10).json()
    assert health["status"] == "ok"


def test_the_image_plans_and_prices_schedules_without_torch(image_service: str) -> None:
    boundary = copy.deepcopy(load_case("paper-1tom-1x2"))
    boundary["options"] = {"algorithm": "greedy", "time_limit_s": 0.5}
    plan = httpx.post(f"{image_service}/v1/plans", json=boundary, timeout=120)
    assert plan.status_code == 200, plan.text
    assert plan.headers["X-Cache"] == "miss" and plan.json()["transfers"]
    body = {"stages": 2, "microbatches": 4, "forward_ms": 10, "backward_ms": 20}
    schedule = httpx.post(
        f"{image_service}/v1/schedules", json={**body, "boundaries": [boundary]}, timeout=120
    )
    assert schedule.status_code == 200, schedule.text
    assert set(schedule.json()["results"]) == {"gpipe", "1f1b", "eager-1f1b"}
