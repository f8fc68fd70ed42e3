"""`meshcast cache warm|export|import`: plans as files for offline and air-gapped jobs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from meshcast.api.cache import open_cache
from meshcast.api.cli import main
from meshcast.planner import parse_request
from tests.conftest import CASES_DIR


def test_warm_export_import_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    requests = tmp_path / "requests"
    requests.mkdir()
    for name in ("paper-1tom-1x2", "paper-n2m-case1"):
        shutil.copy(CASES_DIR / f"{name}.json", requests / f"{name}.json")
    (requests / "broken.json").write_text("{nope")
    cache = str(tmp_path / "a.sqlite3")
    assert main(["cache", "warm", str(requests), "--cache", cache, "--time-limit", "0.5"]) == 1
    out = capsys.readouterr()
    assert out.out.count("planned with auto") == 2
    assert "[1/3] broken.json: skipped: request" in out.err and "is not JSON" in out.err
    # a second warm finds them cached
    assert main(["cache", "warm", str(requests), "--cache", cache]) == 1
    assert capsys.readouterr().out.count("already cached") == 2

    exported = tmp_path / "exported"
    assert main(["cache", "export", str(exported), "--cache", cache]) == 0
    files = sorted(exported.glob("*.json"))
    assert len(files) == 2
    entry = json.loads(files[0].read_text())
    assert parse_request(entry["request"]).request_id == entry["request_id"] == files[0].stem

    other = str(tmp_path / "b.sqlite3")
    (exported / "tampered.json").write_text(
        json.dumps({**entry, "plan": {**entry["plan"], "request_id": "0" * 64}})
    )
    assert main(["cache", "import", str(exported), "--cache", other]) == 1
    out = capsys.readouterr()
    assert "imported 2 plan(s)" in out.out and "the plan was made for another request" in out.err
    imported = open_cache(other)
    try:
        assert len(imported) == 2
        assert json.loads(imported.get(entry["request_id"]) or "null") == entry["plan"]
    finally:
        imported.close()


def test_bad_cache_arguments_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cache", "export", str(tmp_path), "--cache", "ftp://somewhere"]) == 2
    assert "cache: unknown scheme in 'ftp://somewhere'" in capsys.readouterr().err
    assert main(["cache", "warm", str(tmp_path / "missing"), "--cache", str(tmp_path / "c")]) == 2
    assert "is not a directory" in capsys.readouterr().err
