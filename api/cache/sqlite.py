"""The embedded plan cache: one SQLite file in WAL mode, shared safely by several processes.

A file that is not a readable SQLite database (truncated, overwritten, corrupt) is renamed to
`<name>.corrupt-<unix time>` with its WAL and shared-memory files, reported in the log and on the
health route, and a fresh cache starts in its place: the service always comes up.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from meshcast.api.cache.base import CachedPlan, CacheError, decoded

log = logging.getLogger("meshcast.cache")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS plans (request_id TEXT PRIMARY KEY, algorithm TEXT NOT NULL,"
    " created_at REAL NOT NULL, plan TEXT NOT NULL, request TEXT)",
    "CREATE TABLE IF NOT EXISTS claims (request_id TEXT PRIMARY KEY, owner TEXT NOT NULL,"
    " expires_at REAL NOT NULL)",
)


class SqliteCache:
    """Thread-safe plan cache in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path, self.url = path, f"sqlite:///{path}"
        #: where a corrupt file was moved on start, if one was
        self.set_aside: Path | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CacheError(f"cache: cannot create {path.parent}: {err.strerror}") from None
        if path.exists() and not path.is_file():
            raise CacheError(f"cache: {path} is not a file")
        self._lock = threading.Lock()
        try:
            try:
                self._db = self._open()
            except sqlite3.OperationalError:
                raise  # cannot open, locked, disk full: the file itself may be fine
            except sqlite3.DatabaseError as err:  # not a database, or fails its check
                self.set_aside = self._set_aside(err)
                self._db = self._open()
        except sqlite3.OperationalError as err:
            raise CacheError(f"cache: cannot use {path}: {err}") from None

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0)
        try:
            db.execute("PRAGMA busy_timeout = 10000")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
            with db:
                for statement in _SCHEMA:
                    db.execute(statement)
                columns = {row[1] for row in db.execute("PRAGMA table_info(plans)")}
                if "request" not in columns:  # caches written before requests were kept
                    db.execute("ALTER TABLE plans ADD COLUMN request TEXT")
        except BaseException:
            db.close()
            raise
        return db

    def _set_aside(self, err: Exception) -> Path:
        target = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        for suffix in ("", "-wal", "-shm"):
            part = Path(f"{self.path}{suffix}")
            if part.exists():
                part.rename(Path(f"{target}{suffix}"))
        log.error("plan cache %s is unreadable (%s): set aside as %s", self.path, err, target)
        return target

    def get(self, request_id: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT plan FROM plans WHERE request_id = ?", (request_id,)
            ).fetchone()
        return None if row is None else str(row[0])

    def put(
        self, request_id: str, plan: str, request: dict[str, Any] | None, algorithm: str
    ) -> None:
        text = json.dumps(request) if request is not None else None
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO plans VALUES (?, ?, ?, ?, ?)",
                (request_id, algorithm, time.time(), plan, text),
            )

    def entry(self, request_id: str) -> CachedPlan | None:
        with self._lock:
            row = self._db.execute(
                "SELECT plan, request FROM plans WHERE request_id = ?", (request_id,)
            ).fetchone()
        if row is None:
            return None
        return CachedPlan(request_id, decoded(row[0]), decoded(row[1]) if row[1] else None)

    def entries(self) -> Iterator[CachedPlan]:
        with self._lock:
            rows = self._db.execute(
                "SELECT request_id, plan, request FROM plans ORDER BY created_at"
            ).fetchall()
        for request_id, plan, request in rows:
            yield CachedPlan(request_id, decoded(plan), decoded(request) if request else None)

    def claim(self, request_id: str, owner: str, ttl_s: float) -> bool:
        now = time.time()
        with self._lock, self._db:
            self._db.execute("DELETE FROM claims WHERE expires_at < ?", (now,))
            done = self._db.execute(
                "INSERT OR IGNORE INTO claims VALUES (?, ?, ?)", (request_id, owner, now + ttl_s)
            )
            return done.rowcount == 1

    def renew(self, request_id: str, owner: str, ttl_s: float) -> None:
        with self._lock, self._db:
            self._db.execute(
                "UPDATE claims SET expires_at = ? WHERE request_id = ? AND owner = ?",
                (time.time() + ttl_s, request_id, owner),
            )

    def release(self, request_id: str, owner: str) -> None:
        with self._lock, self._db:
            self._db.execute(
                "DELETE FROM claims WHERE request_id = ? AND owner = ?", (request_id, owner)
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM plans").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
