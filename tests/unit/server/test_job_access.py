"""Who sees which asynchronous job (inferd.server.rest.job_access) over a real SQLite store: a key its own jobs
only, and another key's as if absent; an admin every job, picking among owners; without keys, everyone all."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from inferd.jobs.sqlite_store import SqliteJobStore
from inferd.security.auth import Principal
from inferd.security.scopes import Scope
from inferd.server.rest.errors import HTTPError
from inferd.server.rest.job_access import JobAccess
from job_fakes import new_job

ALICE = JobAccess.of({"inferd.principal": Principal("alice", frozenset({Scope.INFER}))})
BOSS = JobAccess.of({"inferd.principal": Principal("boss", frozenset({Scope.ADMIN}))})
NO_KEYS = JobAccess.of({})


@pytest.fixture
def run() -> Iterator[Callable[[Awaitable[Any]], Any]]:
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.close()


@pytest.fixture
def store(tmp_path: Path, run: Callable[[Awaitable[Any]], Any]) -> Iterator[SqliteJobStore]:
    opened = SqliteJobStore(tmp_path / "state")
    run(opened.open())
    yield opened
    run(opened.close())


@pytest.fixture
def jobs(store, run):
    run(store.submit(new_job("a-17", owner="alice", public_id="order-17"), 1.0))
    run(store.submit(new_job("b-17", owner="bob", public_id="order-17"), 2.0))
    run(store.submit(new_job("b-18", owner="bob", public_id="order-18"), 3.0))
    return store


def test_a_key_sees_its_own_jobs_only_and_others_are_404(jobs, run):
    assert run(ALICE.job(jobs, "order-17")).id == "a-17"
    assert run(ALICE.job(jobs, "order-17", "alice")).id == "a-17"
    for public_id, asked in (("order-18", None), ("order-18", "bob"), ("order-17", "bob"), ("nope", None)):
        with pytest.raises(HTTPError) as refused:
            run(ALICE.job(jobs, public_id, asked))
        assert (refused.value.status, refused.value.message) == (404, f"no job {public_id!r}")
    assert ALICE.listing_owner(None) == ALICE.listing_owner("bob") == "alice"


def test_an_admin_sees_every_job_and_picks_among_owners(jobs, run):
    assert run(BOSS.job(jobs, "order-18")).id == "b-18"
    assert run(BOSS.job(jobs, "order-17", "alice")).id == "a-17"
    with pytest.raises(HTTPError) as ambiguous:
        run(BOSS.job(jobs, "order-17"))
    assert (ambiguous.value.status, ambiguous.value.message) == (
        409, "2 jobs are called 'order-17' (owners 'alice', 'bob'): add ?owner=NAME to pick one")
    run(jobs.submit(new_job("boss-17", owner="boss", public_id="order-17"), 4.0))
    assert run(BOSS.job(jobs, "order-17")).id == "boss-17"  # its own job of that id, without ?owner=
    assert (BOSS.listing_owner(None), BOSS.listing_owner("bob")) == (None, "bob")


def test_without_keys_every_caller_sees_every_job(store, run):
    run(store.submit(new_job("n-1", public_id="order-1"), 1.0))
    assert (NO_KEYS.owner, NO_KEYS.sees_all) == (None, True)
    assert run(NO_KEYS.job(store, "order-1")).id == "n-1"
    assert NO_KEYS.listing_owner(None) is None
