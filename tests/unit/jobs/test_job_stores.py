"""The job stores on real databases (each test that takes ``store`` runs on SQLite and on PostgreSQL): submissions,
claims, conditional results, recovery, retention, callbacks; and SQLite's own mechanics (``sqlite_store``): the
lock on the state folder, group commit, its schema migration."""

import asyncio
import sqlite3

import pytest

from inferd.jobs.sqlite_store import SCHEMA_VERSION, SqliteJobStore, StoreLockedError, StoreVersionError
from inferd.jobs.store import CallbackAttempt, CallbackState, JobResult, JobStatus, NewJob, Payload
from job_fakes import committed_jobs, new_job, write_v0_store

RESULT = JobResult(Payload(2, inline=b"ok"))


def test_submit_is_durable_and_idempotent(store, run, tmp_path):
    job, created = run(store.submit(new_job("a", body=b"first"), now=10.0))
    assert created
    assert (job.status, job.attempts, job.created_at) == (JobStatus.QUEUED, 0, 10.0)
    again, created = run(store.submit(new_job("a", body=b"other"), now=11.0))
    assert not created
    assert again.digest == job.digest  # the stored job, untouched by the second submission
    assert run(store.inline("a", "request")) == b"first"
    assert committed_jobs(store) == [("a", "queued")]  # what a fresh connection (another process) finds


def test_claim_takes_the_oldest_due_jobs_up_to_each_models_slots(store, run):
    for i in range(4):
        run(store.submit(new_job(f"m{i}", model="m"), now=float(i)))
    run(store.submit(new_job("n0", model="n"), now=5.0))
    claimed = run(store.claim({"m": 2, "n": 0, "other": 3}, now=20.0))
    assert sorted(j.id for j in claimed) == ["m0", "m1"]
    assert all(j.status is JobStatus.RUNNING and j.attempts == 1 for j in claimed)
    assert run(store.claim({"m": 5}, now=20.0))
    assert run(store.claim({"m": 5}, now=20.0)) == []
    assert run(store.queued_models()) == {"n"}


def test_a_result_is_stored_only_by_the_current_attempt(store, run):
    run(store.submit(new_job("a"), now=0.0))
    (job,) = run(store.claim({"m": 1}, now=1.0))
    assert run(store.recover(now=2.0)) == 1  # as if the server died: the job goes back, attempt kept
    recovered = run(store.get("a"))
    assert (recovered.status, recovered.attempts) == (JobStatus.QUEUED, 1)
    (second,) = run(store.claim({"m": 1}, now=3.0))
    assert second.attempts == 2
    assert not run(store.complete("a", job.attempts, RESULT, now=4.0))  # the stale first run
    assert run(store.complete("a", second.attempts, RESULT, now=5.0))
    assert not run(store.complete("a", second.attempts, JobResult(Payload(1, inline=b"x")), now=6.0))
    done = run(store.get("a"))
    assert (done.status, done.finished_at, done.result_size) == (JobStatus.SUCCEEDED, 5.0, 2)
    assert run(store.inline("a", "result")) == b"ok"


def test_fail_retries_later_or_ends_failed(store, run):
    run(store.submit(new_job("a"), now=0.0))
    (job,) = run(store.claim({"m": 1}, now=1.0))
    assert run(store.fail("a", 1, "UNAVAILABLE", "not ready", retry_at=10.0, now=2.0))
    assert run(store.get("a")).status is JobStatus.QUEUED
    assert run(store.claim({"m": 1}, now=9.0)) == []  # not due yet
    (job,) = run(store.claim({"m": 1}, now=10.0))
    assert run(store.fail("a", job.attempts, "INVALID_ARGUMENT", "bad input", retry_at=None, now=11.0))
    failed = run(store.get("a"))
    assert (failed.status, failed.attempts, failed.error_code, failed.error) == (
        JobStatus.FAILED, 2, "INVALID_ARGUMENT", "bad input")


def test_release_and_cancel(store, run):
    run(store.submit(new_job("a"), now=0.0))
    run(store.submit(new_job("b"), now=0.0))
    (job,) = run(store.claim({"m": 1}, now=1.0))
    assert run(store.cancel("a", now=2.0)).status is JobStatus.RUNNING  # running: not cancelled
    assert run(store.release("a", job.attempts, now=2.0))
    assert (run(store.get("a")).status, run(store.get("a")).attempts) == (JobStatus.QUEUED, 0)
    cancelled = run(store.cancel("b", now=3.0))
    assert (cancelled.status, cancelled.finished_at) == (JobStatus.CANCELLED, 3.0)
    assert run(store.cancel("missing", now=3.0)) is None
    assert [j.id for j in run(store.list_jobs(status=JobStatus.CANCELLED))] == ["b"]
    assert [j.id for j in run(store.list_jobs(limit=1))] == ["b"]


def test_expire_marks_then_deletes_and_returns_payload_files(store, run):
    run(store.submit(NewJob("old", "m", None, "digest", Payload(5, file="old.request")), now=0.0))
    run(store.submit(new_job("new"), now=0.0))
    run(store.submit(new_job("waiting"), now=0.0))
    for job in run(store.claim({"m": 2}, now=1.0)):
        file = "old.result" if job.id == "old" else None
        body = Payload(3, file=file) if file else Payload(3, inline=b"abc")
        run(store.complete(job.id, 1, JobResult(body), now=10.0 if job.id == "old" else 100.0))
    assert run(store.payload_files()) == {"old.request", "old.result"}
    assert sorted(run(store.expire(finished_before=50.0, now=60.0))) == ["old.request", "old.result"]
    old = run(store.get("old"))
    assert (old.status, old.result_size, old.request_file) == (JobStatus.EXPIRED, None, None)
    assert run(store.get("new")).status is JobStatus.SUCCEEDED
    assert run(store.get("waiting")).status is JobStatus.QUEUED  # never expires while queued
    assert run(store.expire(finished_before=70.0, now=80.0)) == []  # the record was marked at 60: deleted
    assert run(store.get("old")) is None


def test_callbacks_are_pending_when_a_job_ends_and_attempts_are_recorded(store, run):
    run(store.submit(new_job("a", callback_url="http://127.0.0.1:1/cb"), now=0.0))
    run(store.submit(new_job("b"), now=0.0))
    for job in run(store.claim({"m": 2}, now=1.0)):
        run(store.complete(job.id, 1, RESULT, now=2.0))
    (pending,) = run(store.pending_callbacks())
    assert (pending.id, pending.callback_state) == ("a", CallbackState.PENDING)
    run(store.record_callback("a", CallbackAttempt(3.0, 500, "HTTP 500"), CallbackState.PENDING))
    run(store.record_callback("a", CallbackAttempt(4.0, 200), CallbackState.DELIVERED))
    job = run(store.get("a"))
    assert job.callback_state is CallbackState.DELIVERED
    assert job.callback_attempts == [CallbackAttempt(3.0, 500, "HTTP 500"), CallbackAttempt(4.0, 200)]
    assert run(store.pending_callbacks()) == []
    assert job.to_dict()["callback"]["attempts"][0] == {"at": "1970-01-01T00:00:03.000Z", "status_code": 500,
                                                        "error": "HTTP 500"}


def test_one_server_per_state_folder(sqlite_store, run, tmp_path):
    second = SqliteJobStore(tmp_path / "state")
    with pytest.raises(StoreLockedError, match="another inferd server .* uses the state folder"):
        run(second.open())


def test_concurrent_submissions_share_commits(sqlite_store, run, tmp_path):
    """Group commit: 500 submissions awaited together take far fewer transactions than 500."""
    store = sqlite_store
    commits = []

    async def submit_all() -> None:
        await asyncio.gather(*(store.submit(new_job(f"j{i}"), now=1.0) for i in range(500)))

    conn = store._writer._conn  # count the writer's COMMITs through a trace callback
    conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    run(submit_all())
    conn.set_trace_callback(None)
    assert len(run(store.list_jobs(limit=1000))) == 500
    assert 1 <= len(commits) < 100, len(commits)


def test_a_failing_write_does_not_undo_the_others_in_its_commit(sqlite_store, run):
    store = sqlite_store
    async def mixed() -> list[object]:
        bad = store._write(lambda conn: conn.execute("INSERT INTO nowhere VALUES (1)"))
        good = store.submit(new_job("ok"), now=1.0)
        return await asyncio.gather(bad, good, return_exceptions=True)

    bad, good = run(mixed())
    assert isinstance(bad, sqlite3.OperationalError)
    assert good[1] is True
    assert run(store.get("ok")) is not None


def test_jobs_keep_their_owner_and_lists_filter_by_it(store, run):
    run(store.submit(new_job("a1", owner="alice"), 1.0))
    run(store.submit(new_job("b1", owner="bob"), 2.0))
    run(store.submit(new_job("n1"), 3.0))
    assert run(store.get("a1")).owner == "alice"
    assert [j.id for j in run(store.list_jobs(owner="alice"))] == ["a1"]
    assert [j.id for j in run(store.list_jobs())] == ["n1", "b1", "a1"]
    [claimed] = run(store.claim({"m": 1}, 10.0))
    assert claimed.owner == "alice"


def test_ids_are_unique_per_owner_not_across_owners(store, run):
    """Two keys may use the same public id; the same owner twice is the same job."""
    alice, created_a = run(store.submit(new_job("k1", owner="alice", public_id="order-17"), 1.0))
    bob, created_b = run(store.submit(new_job("k2", owner="bob", public_id="order-17"), 2.0))
    again, created_again = run(store.submit(new_job("k3", owner="alice", public_id="order-17"), 3.0))
    nobody, created_n = run(store.submit(new_job("k4", public_id="order-17"), 4.0))
    assert (created_a, created_b, created_again, created_n) == (True, True, False, True)
    assert (alice.id, bob.id, again.id, nobody.id) == ("k1", "k2", "k1", "k4")
    assert alice.to_dict()["id"] == bob.to_dict()["id"] == "order-17"
    assert [j.id for j in run(store.find("order-17", "alice"))] == ["k1"]
    assert [j.id for j in run(store.find("order-17", "bob"))] == ["k2"]
    assert [j.id for j in run(store.find("order-17", ""))] == ["k4"]  # submitted without a key
    assert [j.id for j in run(store.find("order-17"))] == ["k1", "k2", "k4"]
    assert run(store.find("order-17", "carol")) == []
    assert [j.id for j in run(store.list_jobs(owner=""))] == ["k4"]
    assert run(store.get("k4")).owner is None


@pytest.mark.parametrize("with_owner", [False, True], ids=["no-owner-column", "owner-column"])
def test_a_version_0_store_migrates_without_losing_jobs(tmp_path, run, with_owner):
    """A state folder of an older release (job ids global, user_version 0) opens: every job, result and callback
    attempt is still there under its id, the queued one still runs, and ids are per owner from then on."""
    folder = tmp_path / "state"
    base = {"model": "m", "created_at": 1.0, "updated_at": 1.0, "digest": "d"}
    rows = [{**base, "id": "waiting", "status": "queued", "request_size": 2, "request_inline": b"{}"},
            {**base, "id": "done", "status": "succeeded", "attempts": 1, "finished_at": 2.0, "result_size": 2,
             "result_inline": b"ok", "callback_url": "http://127.0.0.1:1/cb", "callback_state": "delivered"}]
    if with_owner:
        rows[1]["owner"] = "alice"
    write_v0_store(folder, rows, with_owner, callback_attempts=[("done", 3.0, 200, None)])
    store = SqliteJobStore(folder)
    run(store.open())
    try:
        done = run(store.get("done"))
        assert (done.status, done.public_id, done.owner) == (
            JobStatus.SUCCEEDED, "done", "alice" if with_owner else None)
        assert done.callback_attempts == [CallbackAttempt(3.0, 200)]
        assert run(store.inline("done", "result")) == b"ok"
        assert [j.id for j in run(store.find("waiting", ""))] == ["waiting"]
        (claimed,) = run(store.claim({"m": 1}, now=5.0))
        assert (claimed.id, claimed.request_inline) == ("waiting", b"{}")
        _, created = run(store.submit(new_job("new", owner="bob", public_id="done"), 6.0))
        assert created
    finally:
        run(store.close())
    with sqlite3.connect(folder / "jobs.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    reopened = SqliteJobStore(folder)  # a second open finds the current schema and changes nothing
    run(reopened.open())
    try:
        assert len(run(reopened.list_jobs())) == 3
    finally:
        run(reopened.close())


def test_a_store_from_a_newer_release_is_refused(tmp_path, run):
    folder = tmp_path / "state"
    folder.mkdir()
    with sqlite3.connect(folder / "jobs.db") as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreVersionError, match="newer than this inferd's"):
        run(SqliteJobStore(folder).open())
