"""Callbacks against a real HTTP receiver on loopback: retries with backoff, every attempt recorded, an
unreachable URL ends failed, and pending callbacks resume after a restart."""

import asyncio
import time

from callback_receiver import CallbackReceiver
from inferd.jobs.callbacks import CallbackSender
from inferd.jobs.store import CallbackState, JobResult, JobStatus, Payload
from job_fakes import new_job
from server_process import free_port


async def finished_job(store, job_id, url):
    await store.submit(new_job(job_id, callback_url=url), time.time())
    (job,) = await store.claim({"m": 1}, time.time())
    await store.complete(job.id, job.attempts, JobResult(Payload(2, inline=b"{}")), time.time())


def test_retries_until_delivered_and_records_each_attempt(store, run):
    with CallbackReceiver(fail_first=2) as receiver:
        sender = CallbackSender(store, max_attempts=5, backoff_s=0.05)

        async def main():
            await sender.start()
            await finished_job(store, "a", receiver.url)
            sender.notify("a")
            await sender.idle()
            await sender.stop()
            return await store.get("a")

        started = time.monotonic()
        job = run(main())
        took = time.monotonic() - started
    assert [a.status_code for a in job.callback_attempts] == [500, 500, 200]
    assert [a.error for a in job.callback_attempts] == ["HTTP 500", "HTTP 500", None]
    assert job.callback_state is CallbackState.DELIVERED
    assert took >= 0.05 + 0.1  # backoff doubled between attempts
    assert len(receiver.received) == 3
    body = receiver.received[-1]["body"]
    assert (body["id"], body["status"], receiver.received[-1]["content_type"]) == ("a", "succeeded",
                                                                                   "application/json")
    assert job.status is JobStatus.SUCCEEDED


def test_an_unreachable_url_fails_after_its_attempts_and_leaves_the_job_alone(store, run):
    url = f"http://127.0.0.1:{free_port()}/nobody"
    sender = CallbackSender(store, max_attempts=3, backoff_s=0.01)

    async def main():
        await sender.start()
        await finished_job(store, "a", url)
        sender.notify("a")
        await sender.idle()
        await sender.stop()
        return await store.get("a")

    job = run(main())
    assert len(job.callback_attempts) == 3
    assert all(a.status_code is None and "ConnectError" in a.error for a in job.callback_attempts)
    assert job.callback_state is CallbackState.FAILED
    assert (job.status, run(store.inline("a", "result"))) == (JobStatus.SUCCEEDED, b"{}")


def test_pending_callbacks_resume_at_start_and_count_earlier_attempts(store, run):
    with CallbackReceiver(fail_first=0) as receiver:
        first = CallbackSender(store, max_attempts=2, backoff_s=0.01)

        async def before_restart():
            await finished_job(store, "a", f"http://127.0.0.1:{free_port()}/down")
            await first.start()
            first.notify("a")
            await asyncio.sleep(0)  # let it start, then "crash" before it retries
            await first.stop()

        run(before_restart())
        assert run(store.get("a")).callback_state is CallbackState.PENDING
        # the receiver's URL is the job's from now on: the restarted server delivers there
        run(store._write(lambda conn: conn.execute("UPDATE jobs SET callback_url = ?", (receiver.url,))))
        second = CallbackSender(store, max_attempts=2, backoff_s=0.01)

        async def after_restart():
            await second.start()
            await second.idle()
            await second.stop()

        run(after_restart())
    job = run(store.get("a"))
    assert job.callback_state is CallbackState.DELIVERED
    assert len(receiver.received) == 1
    assert len(job.callback_attempts) in (1, 2)  # the first run may have recorded one attempt before it stopped
