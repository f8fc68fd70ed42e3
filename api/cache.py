"""The plan cache: plans by request id in an embedded SQLite file."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any


class PlanCache:
    """Thread-safe get/put of plan JSON keyed by the canonical request id."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False)
        with self._lock, self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS plans ("
                " request_id TEXT PRIMARY KEY, algorithm TEXT NOT NULL,"
                " created_at REAL NOT NULL, plan TEXT NOT NULL)"
            )

    def get(self, request_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT plan FROM plans WHERE request_id = ?", (request_id,)
            ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def put(self, request_id: str, plan: dict[str, Any]) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO plans VALUES (?, ?, ?, ?)",
                (request_id, plan["algorithm"], time.time(), json.dumps(plan)),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM plans").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
