"""Real job stores on one event loop per test: ``store`` is each implementation in turn (SQLite in a temporary
folder, PostgreSQL in a database of its own on the session's throw-away cluster), so the protocol's tests run
against both; ``sqlite_store`` is SQLite alone, for the tests of its own mechanics (lock file, group commit)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from inferd.jobs.sqlite_store import SqliteJobStore
from inferd.jobs.store import JobStore


@pytest.fixture
def run() -> Iterator[Callable[[Awaitable[Any]], Any]]:
    """Run coroutines on one event loop for the whole test (the store's futures belong to it)."""
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.close()


@pytest.fixture
def sqlite_store(tmp_path: Path, run: Callable[[Awaitable[Any]], Any]) -> Iterator[SqliteJobStore]:
    opened = SqliteJobStore(tmp_path / "state")
    run(opened.open())
    yield opened
    run(opened.close())


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path, run: Callable[[Awaitable[Any]], Any]) -> Iterator[JobStore]:
    opened: JobStore
    if request.param == "sqlite":
        opened = SqliteJobStore(tmp_path / "state")
    else:
        from inferd.jobs.postgres_store import PostgresJobStore

        opened = PostgresJobStore(request.getfixturevalue("postgres_dsn"))
    run(opened.open())
    yield opened
    run(opened.close())
