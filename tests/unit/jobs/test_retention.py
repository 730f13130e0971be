"""The TTL sweep: finished jobs past the TTL turn expired and their payload files are deleted from disk."""

import asyncio

from inferd.jobs.payloads import PayloadFiles
from inferd.jobs.retention import Retention, sweep_interval
from inferd.jobs.store import JobResult, JobStatus, NewJob


def test_sweep_deletes_payload_files_of_jobs_past_the_ttl(store, run, tmp_path):
    files = PayloadFiles(tmp_path / "payloads", fsync=False)
    files.prepare()
    now = [1000.0]
    retention = Retention(store, files, ttl_s=60, clock=lambda: now[0])

    async def finish(job_id: str, at: float) -> None:
        body = await files.store(b"r" * 10, inline_limit=0, kind="request")
        await store.submit(NewJob(job_id, "m", None, "d", body), at)
        (job,) = await store.claim({"m": 1}, at)
        result = await files.store(b"x" * 10, inline_limit=0, kind="result")
        await store.complete(job_id, job.attempts, JobResult(result), at)

    run(finish("old", 900.0))
    run(finish("new", 990.0))
    assert len(files.names()) == 4
    assert run(retention.sweep()) == 2
    assert len(files.names()) == 2
    assert run(store.get("old")).status is JobStatus.EXPIRED
    assert run(store.get("new")).status is JobStatus.SUCCEEDED
    now[0] = 1100.0
    assert run(retention.sweep()) == 2  # "new" expires now; the "old" record was expired at 1000: now deleted
    assert (run(store.get("old")), run(store.get("new")).status) == (None, JobStatus.EXPIRED)
    assert files.names() == set()


def test_sweep_interval_follows_the_ttl_within_bounds():
    assert sweep_interval(0.5) == 0.1
    assert sweep_interval(60) == 6
    assert sweep_interval(86400) == 300


def test_run_sweeps_periodically(store, run, tmp_path):
    files = PayloadFiles(tmp_path / "payloads")
    calls = []

    class Counting(Retention):
        async def sweep(self) -> int:
            calls.append(1)
            return 0

    async def main():
        task = asyncio.create_task(Counting(store, files, ttl_s=1).run())
        await asyncio.sleep(0.35)
        task.cancel()

    run(main())
    assert 3 <= len(calls) <= 5
