"""A real SQLite job store in a temporary folder, on one event loop per test."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from inferd.jobs.sqlite_store import SqliteJobStore


@pytest.fixture
def run() -> Iterator[Callable[[Awaitable[Any]], Any]]:
    """Run coroutines on one event loop for the whole test (the store's futures belong to it)."""
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.close()


@pytest.fixture
def store(tmp_path: Path, run: Callable[[Awaitable[Any]], Any]) -> Iterator[SqliteJobStore]:
    opened = SqliteJobStore(tmp_path / "state")
    run(opened.open())
    yield opened
    run(opened.close())
