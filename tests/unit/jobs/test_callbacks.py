"""Callbacks against a real HTTP receiver on loopback (allowed explicitly: ``LOOPBACK``): retries with backoff,
every attempt recorded, an unreachable URL ends failed, pending callbacks resume after a restart; a redirect is
not followed, a destination the setting does not allow is never called, and a delivery connects to the address
that was checked."""

import asyncio
import ipaddress
import time

from callback_receiver import CallbackReceiver
from inferd.jobs.callbacks import CallbackSender
from inferd.jobs.destinations import Destinations
from inferd.jobs.store import CallbackState, JobResult, JobStatus, Payload
from job_fakes import new_job, set_callback_urls
from server_process import free_port

LOOPBACK = Destinations(["127.0.0.1"])


async def finished_job(store, job_id, url):
    await store.submit(new_job(job_id, callback_url=url), time.time())
    (job,) = await store.claim({"m": 1}, time.time())
    await store.complete(job.id, job.attempts, JobResult(Payload(2, inline=b"{}")), time.time())


def test_retries_until_delivered_and_records_each_attempt(store, run):
    with CallbackReceiver(fail_first=2) as receiver:
        sender = CallbackSender(store, LOOPBACK, max_attempts=5, backoff_s=0.05)

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
    sender = CallbackSender(store, LOOPBACK, max_attempts=3, backoff_s=0.01)

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
        first = CallbackSender(store, LOOPBACK, max_attempts=2, backoff_s=0.01)

        async def before_restart():
            await finished_job(store, "a", f"http://127.0.0.1:{free_port()}/down")
            await first.start()
            first.notify("a")
            await asyncio.sleep(0)  # let it start, then "crash" before it retries
            await first.stop()

        run(before_restart())
        assert run(store.get("a")).callback_state is CallbackState.PENDING
        # the receiver's URL is the job's from now on: the restarted server delivers there
        run(set_callback_urls(store, receiver.url))
        second = CallbackSender(store, LOOPBACK, max_attempts=2, backoff_s=0.01)

        async def after_restart():
            await second.start()
            await second.idle()
            await second.stop()

        run(after_restart())
    job = run(store.get("a"))
    assert job.callback_state is CallbackState.DELIVERED
    assert len(receiver.received) == 1
    assert len(job.callback_attempts) in (1, 2)  # the first run may have recorded one attempt before it stopped


def deliver(store, run, sender, url):
    async def main():
        await sender.start()
        await finished_job(store, "a", url)
        sender.notify("a")
        await sender.idle()
        await sender.stop()
        return await store.get("a")

    return run(main())


def test_a_redirect_is_recorded_and_not_followed(store, run):
    with CallbackReceiver() as inside, CallbackReceiver(redirect_to=inside.url) as redirecting:
        job = deliver(store, run, CallbackSender(store, LOOPBACK, max_attempts=2, backoff_s=0.01), redirecting.url)
        assert len(redirecting.received) == 2
        assert inside.received == []  # the 307 pointed there: never followed
    assert [a.status_code for a in job.callback_attempts] == [307, 307]
    assert job.callback_attempts[0].error == "HTTP 307 (redirects are not followed)"
    assert job.callback_state is CallbackState.FAILED


def test_a_destination_no_longer_allowed_is_never_called_and_fails_at_once(store, run):
    """A job stored with a callback the setting does not allow (say, before the setting changed) is refused at
    delivery: one attempt recorded, naming the setting, and no connection made."""
    with CallbackReceiver() as receiver:
        job = deliver(store, run, CallbackSender(store, Destinations(["hooks.example.com"]), max_attempts=5,
                                                 backoff_s=0.01), receiver.url)
        assert receiver.received == []
    (attempt,) = job.callback_attempts
    assert attempt.status_code is None
    assert attempt.error.startswith("refused: ")
    assert "async_callback_allowed" in attempt.error
    assert "127.0.0.1 (a loopback address)" in attempt.error
    assert job.callback_state is CallbackState.FAILED


def test_delivery_connects_to_the_checked_address_and_keeps_the_name_in_host(store, run):
    """hooks.example.com does not resolve here; the sender's resolver (the one the check uses) says 127.0.0.1.
    The POST arrives, so the connection went to the checked address, not to a second lookup by the client."""
    resolved = []

    async def resolver(host, port):
        resolved.append((host, port))
        return [ipaddress.ip_address("127.0.0.1")]

    with CallbackReceiver() as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        allowed = Destinations(["hooks.example.com", "127.0.0.1"], resolver=resolver)
        job = deliver(store, run, CallbackSender(store, allowed, max_attempts=1),
                      f"http://hooks.example.com:{port}/done?x=1")
    assert job.callback_state is CallbackState.DELIVERED
    assert resolved == [("hooks.example.com", int(port))]
    assert (receiver.received[0]["host"], receiver.received[0]["path"]) == (f"hooks.example.com:{port}", "/done?x=1")


def test_a_name_that_resolves_to_a_loopback_address_is_refused_unless_the_address_is_listed(store, run):
    async def rebinding(host, port):  # a listed name whose DNS answer is (now) loopback
        return [ipaddress.ip_address("127.0.0.1")]

    with CallbackReceiver() as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        allowed = Destinations(["hooks.example.com"], resolver=rebinding)
        job = deliver(store, run, CallbackSender(store, allowed, max_attempts=3, backoff_s=0.01),
                      f"http://hooks.example.com:{port}/done")
        assert receiver.received == []
    (attempt,) = job.callback_attempts
    assert "hooks.example.com resolves to 127.0.0.1 (a loopback address)" in attempt.error
    assert "async_callback_allowed" in attempt.error
