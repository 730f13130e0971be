"""Durable endpoint state: ``endpoints.db`` (SQLite) in the server's state folder, beside the job store.

Three tables: the endpoints as last changed (each with its change counter), their events (every change, rollout
step and decision, with a timestamp), and the rollouts (their spec and how far they got). Every write is one
transaction; :meth:`EndpointStore.put` is a compare-and-set on the change counter, so of two admin changes made
against the same version one wins and the other gets ABORTED (409), even across server processes sharing the
folder. Admin changes are rare: the calls are synchronous and short.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferd.errors import ErrorCode, InferError

SCHEMA = """
CREATE TABLE IF NOT EXISTS endpoints (name TEXT PRIMARY KEY, spec TEXT, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, endpoint TEXT NOT NULL, at REAL NOT NULL,
                                   kind TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_by_endpoint ON events (endpoint, id);
CREATE TABLE IF NOT EXISTS rollouts (endpoint TEXT PRIMARY KEY, spec TEXT NOT NULL, state TEXT NOT NULL,
                                     step INTEGER NOT NULL, updated REAL NOT NULL, owner TEXT, lease_until REAL);
"""
LEASE_COLUMNS = (("owner", "TEXT"), ("lease_until", "REAL"))
"""Added to a rollouts table made before leases existed."""


@dataclass(frozen=True, slots=True)
class Event:
    endpoint: str
    at: float
    kind: str
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "at": self.at,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at)), "kind": self.kind,
                "detail": self.detail}


@dataclass(frozen=True, slots=True)
class RolloutRow:
    endpoint: str
    spec: dict[str, Any]
    state: str
    step: int
    owner: str | None = None
    """The server process driving the rollout (see :mod:`inferd.endpoints.lease`)."""
    lease_until: float | None = None
    """Until when (``time.time()``) its lease holds; another process may take a rollout over after that."""


class EndpointStore:
    """The endpoints' durable state: a SQLite file, made at the first write (a server with no endpoint never makes
    it: creating its tables is a few tens of milliseconds of every cold start). Until then, reads find nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._opened: sqlite3.Connection | None = None
        self._opening = threading.Lock()

    @property
    def _db(self) -> sqlite3.Connection:
        if self._opened is None:
            with self._opening:
                if self._opened is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
                    db.execute("PRAGMA journal_mode=WAL")
                    db.executescript(SCHEMA)
                    columns = {row[1] for row in db.execute("PRAGMA table_info(rollouts)")}
                    for name, kind in LEASE_COLUMNS:
                        if name not in columns:
                            db.execute(f"ALTER TABLE rollouts ADD COLUMN {name} {kind}")
                    self._opened = db
        return self._opened

    def _empty(self) -> bool:
        """Nothing stored yet: the file was never made (by this server or another on the same state folder)."""
        return self._opened is None and not self.path.exists()

    def data_version(self) -> int:
        """SQLite's counter of the changes other connections (other server processes) committed: when it
        moves, the endpoints may have changed. -1 while no process has made the file (following it makes
        nothing)."""
        if self._empty():
            return -1
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        if self._opened is not None:
            self._opened.close()

    def endpoints(self) -> dict[str, tuple[dict[str, Any] | None, int]]:
        """Every endpoint the store knows: its spec (None: deleted) and change counter."""
        if self._empty():
            return {}
        rows = self._db.execute("SELECT name, spec, version FROM endpoints").fetchall()
        return {name: (None if spec is None else json.loads(spec), version) for name, spec, version in rows}

    def put(self, name: str, spec: dict[str, Any] | None, expected: int | None, event: str,
            detail: dict[str, Any]) -> int:
        """Write an endpoint's spec (None deletes it) if its change counter is still ``expected`` (None: any);
        returns the new counter. ABORTED when another change got there first."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT version FROM endpoints WHERE name = ?", (name,)).fetchone()
            current = 0 if row is None else int(row[0])
            if expected is not None and expected != current:
                raise InferError(ErrorCode.ABORTED, f"endpoint {name!r} changed meanwhile: it is at version "
                                                    f"{current}, the change was made against {expected}; read it "
                                                    f"again and retry")
            db.execute("INSERT INTO endpoints (name, spec, version) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
                       "SET spec = excluded.spec, version = excluded.version",
                       (name, None if spec is None else json.dumps(spec), current + 1))
            self._event(name, event, {**detail, "version": current + 1})
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return current + 1

    def event(self, endpoint: str, kind: str, detail: dict[str, Any]) -> None:
        self._event(endpoint, kind, detail)

    def _event(self, endpoint: str, kind: str, detail: dict[str, Any]) -> None:
        self._db.execute("INSERT INTO events (endpoint, at, kind, detail) VALUES (?, ?, ?, ?)",
                         (endpoint, time.time(), kind, json.dumps(detail)))

    def events(self, endpoint: str, limit: int = 1000) -> list[Event]:
        if self._empty():
            return []
        rows = self._db.execute("SELECT endpoint, at, kind, detail FROM events WHERE endpoint = ? ORDER BY id DESC "
                                "LIMIT ?", (endpoint, limit)).fetchall()
        return [Event(e, at, kind, json.loads(detail)) for e, at, kind, detail in reversed(rows)]

    def start_rollout(self, endpoint: str, spec: dict[str, Any], owner: str | None = None,
                      lease_s: float = 0.0) -> None:
        """Record a new rollout, driven by ``owner`` for ``lease_s`` (renewed as it goes); ABORTED when one is
        running on the endpoint."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT state FROM rollouts WHERE endpoint = ?", (endpoint,)).fetchone()
            if row is not None and row[0] == "running":
                raise InferError(ErrorCode.ABORTED, f"endpoint {endpoint!r} has a rollout running; wait for it to "
                                                    f"finish or roll it back first")
            now = time.time()
            db.execute("INSERT OR REPLACE INTO rollouts (endpoint, spec, state, step, updated, owner, lease_until) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", (endpoint, json.dumps(spec), "running", 0, now, owner,
                                                         now + lease_s))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def update_rollout(self, endpoint: str, state: str, step: int) -> None:
        self._db.execute("UPDATE rollouts SET state = ?, step = ?, updated = ? WHERE endpoint = ?",
                         (state, step, time.time(), endpoint))

    def renew(self, endpoint: str, owner: str, lease_s: float) -> bool:
        """Extend ``owner``'s lease on the endpoint's running rollout; False when it is no longer its own (another
        process took it over, or it ended)."""
        changed = self._db.execute("UPDATE rollouts SET lease_until = ? WHERE endpoint = ? AND owner = ? AND "
                                   "state = 'running'", (time.time() + lease_s, endpoint, owner)).rowcount
        return changed == 1

    def release(self, owner: str) -> None:
        """End ``owner``'s leases now (a server stopping): another process, or the next start, takes its running
        rollouts over at once."""
        self._db.execute("UPDATE rollouts SET lease_until = 0 WHERE owner = ? AND state = 'running'", (owner,))

    def take_over(self, endpoint: str, owner: str, lease_s: float, seen: RolloutRow) -> bool:
        """Make ``owner`` the driver of the endpoint's running rollout if it is still as ``seen`` (the same owner
        and lease, which the caller judged dead or expired): of several processes trying at once, one wins."""
        changed = self._db.execute(
            "UPDATE rollouts SET owner = ?, lease_until = ? WHERE endpoint = ? AND state = 'running' AND "
            "owner IS ? AND lease_until IS ?", (owner, time.time() + lease_s, endpoint, seen.owner, seen.lease_until),
        ).rowcount
        return changed == 1

    def running_rollouts(self, not_owner: str) -> list[RolloutRow]:
        """The running rollouts another process drives (what a follower checks for a lapsed owner, each tick)."""
        if self._empty():
            return []
        rows = self._db.execute("SELECT endpoint, spec, state, step, owner, lease_until FROM rollouts WHERE state = "
                                "'running' AND owner IS NOT ?", (not_owner,)).fetchall()
        return [RolloutRow(e, json.loads(spec), state, step, owner, lease)
                for e, spec, state, step, owner, lease in rows]

    def rollouts(self) -> list[RolloutRow]:
        if self._empty():
            return []
        rows = self._db.execute("SELECT endpoint, spec, state, step, owner, lease_until FROM rollouts").fetchall()
        return [RolloutRow(e, json.loads(spec), state, step, owner, lease)
                for e, spec, state, step, owner, lease in rows]

    def rollout(self, endpoint: str) -> RolloutRow | None:
        return next((r for r in self.rollouts() if r.endpoint == endpoint), None)
