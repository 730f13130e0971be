"""The worker over a real SQLite store and payload folder, with a scripted inference function: retries and
backoff, errors that must not be retried, the per-model concurrency limit, stale attempts, a clean stop."""

import asyncio
import logging
import sqlite3
import time

from inferd.errors import ErrorCode, InferError
from inferd.jobs.payloads import PayloadFiles
from inferd.jobs.store import JobResult, JobStatus, Payload
from inferd.jobs.worker import RetryPolicy, Worker, WorkerOptions
from job_fakes import new_job


def make_worker(store, tmp_path, infer, **options):
    files = PayloadFiles(tmp_path / "payloads", fsync=False)
    files.prepare()

    async def load_body(job):
        return await store.inline(job.id, "request")

    finished = []
    opts = WorkerOptions(poll_s=0.01, **options)
    return Worker(store, files, infer, load_body, opts, on_finished=lambda job: finished.append(job.id)), files, finished


async def wait_for(store, job_ids, statuses=frozenset(s for s in JobStatus if s.finished), timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = [await store.get(i) for i in job_ids]
        if all(j.status in statuses for j in jobs):
            return jobs
        await asyncio.sleep(0.01)
    raise AssertionError(f"jobs not finished: {[(j.id, j.status) for j in jobs]}")


def test_unavailable_is_retried_with_exponential_backoff_then_succeeds(store, run, tmp_path):
    calls: list[float] = []

    async def infer(job, body):
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise InferError(ErrorCode.UNAVAILABLE, "model 'm' is not ready")
        return b'{"ok":true}', None

    worker, _, finished = make_worker(store, tmp_path, infer, retry=RetryPolicy(3, backoff_s=0.05))

    async def main():
        worker.start()
        await store.submit(new_job("a"), time.time())
        worker.wake("m")
        (job,) = await wait_for(store, ["a"])
        await worker.stop()
        return job

    job = run(main())
    assert (job.status, job.attempts, finished) == (JobStatus.SUCCEEDED, 3, ["a"])
    assert calls[1] - calls[0] >= 0.05
    assert calls[2] - calls[1] >= 0.1
    assert run(store.inline("a", "result")) == b'{"ok":true}'


def test_errors_end_the_job_with_the_message_and_code(store, run, tmp_path):
    async def infer(job, body):
        if job.id == "bad":
            raise InferError(ErrorCode.INVALID_ARGUMENT, "input 'x': expected datatype FP32, got INT64")
        raise InferError(ErrorCode.INTERNAL, f"model 'm' failed (attempt {job.attempts})")

    worker, _, finished = make_worker(store, tmp_path, infer, retry=RetryPolicy(2, backoff_s=0.01))

    async def main():
        await store.submit(new_job("bad"), time.time())
        await store.submit(new_job("flaky"), time.time())
        worker.start()
        jobs = await wait_for(store, ["bad", "flaky"])
        await worker.stop()
        return jobs

    bad, flaky = run(main())
    assert (bad.status, bad.attempts, bad.error_code, bad.error) == (
        JobStatus.FAILED, 1, "INVALID_ARGUMENT", "input 'x': expected datatype FP32, got INT64")
    assert (flaky.status, flaky.attempts, flaky.error_code, flaky.error) == (
        JobStatus.FAILED, 2, "INTERNAL", "model 'm' failed (attempt 2)")
    assert sorted(finished) == ["bad", "flaky"]


def test_per_model_concurrency_limit_and_models_interleave(store, run, tmp_path):
    running = {"a": 0, "b": 0}
    most = {"a": 0, "b": 0}
    order: list[str] = []

    async def infer(job, body):
        running[job.model] += 1
        most[job.model] = max(most[job.model], running[job.model])
        order.append(job.id)
        await asyncio.sleep(0.02)
        running[job.model] -= 1
        return b"{}", None

    worker, _, _ = make_worker(store, tmp_path, infer, concurrency_per_model=2)

    async def main():
        for i in range(8):
            await store.submit(new_job(f"a{i}", model="a"), time.time())
        await store.submit(new_job("b0", model="b"), time.time())
        worker.start()
        await wait_for(store, [f"a{i}" for i in range(8)] + ["b0"])
        await worker.stop()

    run(main())
    assert most == {"a": 2, "b": 1}
    assert order.index("b0") < order.index("a2")  # b runs beside a, not behind its backlog


def test_a_stale_attempt_keeps_no_result(store, run, tmp_path):
    """The job was recovered and claimed again while its first run was still going: when the first run ends,
    its result (a payload file here) is thrown away, and only the current attempt can store one."""
    gate = asyncio.Event()

    async def infer(job, body):
        await gate.wait()
        return b"x" * 100, None

    worker, files, finished = make_worker(store, tmp_path, infer, inline_limit=10, concurrency_per_model=1,
                                          claim_ahead=1)  # its one claim is taken: the test claims the retry

    async def main():
        await store.submit(new_job("a"), time.time())
        worker.start()
        (first,) = await wait_for(store, ["a"], {JobStatus.RUNNING})
        await store.recover(time.time())  # as if this run's server were gone: the job moves on
        (current,) = await store.claim({"m": 1}, time.time())
        gate.set()  # the stale run ends now and tries to store its result
        while worker.running:
            await asyncio.sleep(0.01)
        await worker.stop()
        return first, current, await store.get("a")

    first, current, stored = run(main())
    assert (first.attempts, current.attempts) == (1, 2)
    assert (stored.status, stored.result_size, finished) == (JobStatus.RUNNING, None, [])
    assert files.names() == set()  # the stale run's result file was deleted
    assert run(store.complete("a", 2, JobResult(Payload(2, inline=b"ok")), time.time()))


def test_stop_puts_running_jobs_back_without_counting_the_attempt(store, run, tmp_path):
    async def infer(job, body):
        await asyncio.sleep(60)
        return b"{}", None

    worker, _, _ = make_worker(store, tmp_path, infer)

    async def main():
        await store.submit(new_job("a"), time.time())
        worker.start()
        await wait_for(store, ["a"], {JobStatus.RUNNING})
        await worker.stop()
        return await store.get("a")

    job = run(main())
    assert (job.status, job.attempts) == (JobStatus.QUEUED, 0)


class SlowAnswerStore:
    """The real store, whose claim commits and then takes a while to answer (a busy database server)."""

    def __init__(self, store):
        self._store = store
        self.claimed = asyncio.Event()

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def claim(self, *args):
        jobs = await self._store.claim(*args)
        if jobs:
            self.claimed.set()
            await asyncio.sleep(0.2)
        return jobs


def test_a_stop_during_a_claim_puts_the_claimed_jobs_back(store, run, tmp_path):
    """Stopped between a claim's commit and its answer, the worker still hands the jobs back: cancelling the claim
    there left them running, claimed by nobody, until the next start recovered them (with an attempt lost)."""
    async def infer(job, body):
        await asyncio.sleep(60)
        return b"{}", None

    slow = SlowAnswerStore(store)
    worker, _, _ = make_worker(slow, tmp_path, infer)

    async def main():
        await store.submit(new_job("a"), time.time())
        await store.submit(new_job("b"), time.time())
        worker.start()
        await slow.claimed.wait()
        await worker.stop()
        return [await store.get(i) for i in ("a", "b")]

    jobs = run(main())
    assert [(j.status, j.attempts) for j in jobs] == [(JobStatus.QUEUED, 0)] * 2


def test_a_job_that_died_with_its_last_attempt_fails(store, run, tmp_path):
    async def infer(job, body):
        raise AssertionError("must not run again")

    worker, _, _ = make_worker(store, tmp_path, infer, retry=RetryPolicy(1))

    async def main():
        await store.submit(new_job("a"), time.time())
        await store.claim({"m": 1}, time.time())
        await store.recover(time.time())  # the server died while attempt 1 of 1 ran
        worker.start()
        (job,) = await wait_for(store, ["a"])
        await worker.stop()
        return job

    job = run(main())
    assert (job.status, job.attempts) == (JobStatus.FAILED, 2)
    assert job.error == "gave up after 1 attempts: the server stopped while it ran"


class FullDiskStore:
    """The real store, whose writes of outcomes (complete, fail) hit a full disk until ``space()`` is called."""

    def __init__(self, store):
        self._store = store
        self.refused: list[str] = []
        self._full = True

    def space(self):
        self._full = False

    def __getattr__(self, name):
        return getattr(self._store, name)

    def _check(self, what):
        if self._full:
            self.refused.append(what)
            raise sqlite3.OperationalError("database or disk is full")

    async def complete(self, *args):
        self._check("complete")
        return await self._store.complete(*args)

    async def fail(self, *args):
        self._check("fail")
        return await self._store.fail(*args)


def test_an_outcome_that_cannot_be_stored_is_retried_until_there_is_space(store, run, tmp_path, caplog):
    """A full disk when the result, a retry or a failure is stored: the job does not stay running until a restart;
    it ends as soon as there is space again, with one warning per job rather than one per try."""
    full = FullDiskStore(store)

    async def infer(job, body):
        if job.id == "bad":
            raise InferError(ErrorCode.INVALID_ARGUMENT, "input 'x' is wrong")
        if job.id == "flaky" and job.attempts == 1:
            raise InferError(ErrorCode.UNAVAILABLE, "model 'm' is not ready")
        return b'{"ok":true}', None

    worker, _, finished = make_worker(full, tmp_path, infer, retry=RetryPolicy(3, backoff_s=0.01),
                                      store_retry_s=0.01, store_retry_max_s=0.05)

    async def main():
        for job_id in ("good", "bad", "flaky"):
            await store.submit(new_job(job_id), time.time())
        worker.start()
        deadline = time.monotonic() + 10
        while full.refused.count("complete") < 3 or full.refused.count("fail") < 3:
            assert time.monotonic() < deadline, full.refused
            await asyncio.sleep(0.01)
        assert {j.status for j in await store.list_jobs()} == {JobStatus.RUNNING}  # waiting for space
        full.space()
        jobs = await wait_for(store, ["good", "bad", "flaky"])
        await worker.stop()
        return jobs

    with caplog.at_level(logging.INFO, logger="inferd.jobs.worker"):
        good, bad, flaky = run(main())
    assert (good.status, bad.status, flaky.status) == (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.SUCCEEDED)
    assert (bad.error, flaky.attempts) == ("input 'x' is wrong", 2)
    assert sorted(finished) == ["bad", "flaky", "good"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3, warnings  # good's result, bad's failure, flaky's retry: once each
    assert all("database or disk is full" in w and "trying again until it is stored" in w for w in warnings)
    assert all(r.exc_info is None for r in caplog.records)  # a full disk is no bug: no traceback


def test_during_a_flood_the_worker_claims_ahead_but_runs_only_its_places(store, run, tmp_path):
    gate = asyncio.Event()
    inside = []

    async def infer(job, body):
        inside.append(job.id)
        await gate.wait()
        return b"{}", None

    worker, _, _ = make_worker(store, tmp_path, infer, concurrency_per_model=2, claim_ahead=4)
    flooding = [False]
    worker.flooded = lambda: flooding[0]

    async def main():
        for i in range(12):
            await store.submit(new_job(f"j{i}"), time.time())
        worker.start()
        await wait_for(store, ["j0", "j1"], {JobStatus.RUNNING})
        await asyncio.sleep(0.1)
        calm = sorted(j.id for j in await store.list_jobs(status=JobStatus.RUNNING))
        flooding[0] = True
        worker.wake("m")
        await wait_for(store, [f"j{i}" for i in range(8)], {JobStatus.RUNNING})
        flooded = sorted(j.id for j in await store.list_jobs(status=JobStatus.RUNNING))
        assert len(inside) == 2  # still only its two places infer
        gate.set()
        await wait_for(store, [f"j{i}" for i in range(12)])
        await worker.stop()
        return calm, flooded

    calm, flooded = run(main())
    assert calm == ["j0", "j1"]  # no flood: only as many claimed as run, the rest stay queued (cancellable)
    assert len(flooded) == 8  # 4 x 2 claimed ahead
    assert sorted(inside[:2]) == ["j0", "j1"]  # the two claimed first run first, in either order
    assert len(inside) == 12
