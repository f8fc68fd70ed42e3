"""One local world of processes (gloo over 127.0.0.1) shared by the executor tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("torch")

from meshcast.executor.local_world import LocalWorld

#: enough ranks for the largest paper layout (case6: 20 devices); smaller requests leave the
#: remaining ranks in neither mesh, which every test thereby covers
WORLD_SIZE = 20


@pytest.fixture(scope="session")
def world() -> Iterator[LocalWorld]:
    with LocalWorld(WORLD_SIZE, timeout_s=60) as local_world:
        yield local_world
