"""Callbacks: when a job ends (succeeded, failed or cancelled) and has a callback URL, POST its status document
there, retrying with exponential backoff. Every attempt is recorded in the store with its HTTP status or error,
and a callback still pending when the server stops is delivered after it starts again.

A callback never changes the job: an unreachable receiver leaves the result as it is. Each attempt goes only
where :class:`~inferd.jobs.destinations.Destinations` allows, to the address it checked; a refused destination
ends the callback failed at once, and a redirect is an answer like any other non-2xx one (never followed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson

from inferd.backoff import doubling_delay
from inferd.jobs.destinations import Destinations, RefusedDestinationError
from inferd.jobs.store import CallbackAttempt, CallbackState, Job, JobStore

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 32
"""Deliveries sent at once; more wait."""
RESUME_EVERY_S = 30.0
"""How often pending callbacks nobody delivers (their server died, a store failure ended a delivery) are taken up."""


class CallbackSender:
    def __init__(self, store: JobStore, destinations: Destinations, *, max_attempts: int = 5,
                 backoff_s: float = 1.0, max_backoff_s: float = 300.0, timeout_s: float = 10.0,
                 links_base: str = "") -> None:
        """``links_base``: what the links of the status document sent start with (the ``public_url`` setting;
        empty: paths)."""
        self._store = store
        self._destinations = destinations
        self._links_base = links_base
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._timeout_s = timeout_s
        self._clock: Callable[[], float] = time.time
        self._clients: dict[str, httpx.AsyncClient] = {}
        """One per TLS name (and one for addresses): connections are pooled by the checked address, and one
        opened and verified for one name must not carry a request for another name at the same address. Each
        is made for its first delivery: httpx and its TLS context cost about 0.2 s, not worth paying at every
        server start for jobs that may never have a callback."""
        self._started = False
        self._limit = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._resumer: asyncio.Task[None] | None = None
        self.resume_every_s = RESUME_EVERY_S

    async def start(self) -> None:
        """Take deliveries, and resume the callbacks a previous run (or a server that died) left pending."""
        self._started = True
        await self._resume()
        self._resumer = asyncio.create_task(self._resume_periodically(), name="inferd-callbacks-resume")

    async def _resume(self) -> None:
        for job in await self._store.pending_callbacks():
            self.notify(job.id)

    async def _resume_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.resume_every_s)
            try:
                await self._resume()
            except Exception as exc:  # the store is away: the next round tries again
                log.warning("resuming pending callbacks failed: %s", exc)

    async def stop(self) -> None:
        if self._resumer is not None:
            self._resumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resumer
            self._resumer = None
        tasks = list(self._in_flight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._started = False
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    def notify(self, job_id: str) -> None:
        """Job ``job_id`` has ended: deliver its callback, if it has one that is pending."""
        if job_id in self._in_flight or not self._started:
            return
        task = asyncio.create_task(self._deliver(job_id), name=f"inferd-callback-{job_id}")
        self._in_flight[job_id] = task
        task.add_done_callback(lambda _t: self._in_flight.pop(job_id, None))

    async def idle(self) -> None:
        """Wait until no delivery is in flight (for tests and a clean stop)."""
        while self._in_flight:
            await asyncio.gather(*self._in_flight.values(), return_exceptions=True)

    def delay(self, attempt: int) -> float:
        return doubling_delay(self._backoff_s, attempt, self._max_backoff_s)

    async def _deliver(self, job_id: str) -> None:
        try:
            job = await self._store.claim_callback(job_id, self._clock())  # None: not pending, or another server's
            if job is None or job.callback_url is None:
                return
            await self._attempts(job, job.callback_url)
        except asyncio.CancelledError:
            raise
        except Exception:  # a store failure: the callback stays pending and is resumed at the next start
            log.exception("callback of job %s failed", job_id)

    async def _attempts(self, job: Job, url: str) -> None:
        body = orjson.dumps(job.to_dict(self._links_base))
        done = len(job.callback_attempts)
        for number in range(done + 1, self._max_attempts + 1):
            if number > 1:
                await asyncio.sleep(self.delay(number - 1))
            status, error, refused = await self._post(url, body)
            delivered = status is not None and 200 <= status < 300
            last = number >= self._max_attempts or refused
            state = (CallbackState.DELIVERED if delivered else CallbackState.FAILED if last
                     else CallbackState.PENDING)
            await self._store.record_callback(job.id, CallbackAttempt(self._clock(), status, error), state)
            if delivered or refused:
                return
            log.info("callback of job %s to %s, attempt %d: %s", job.id, url, number, error or f"HTTP {status}")

    async def _post(self, url: str, body: bytes) -> tuple[int | None, str | None, bool]:
        """One attempt: (HTTP status or None, error or None, whether the destination is refused)."""
        import httpx

        async with self._limit:
            try:
                target = await self._destinations.pin(url)  # resolved and checked now: each attempt again
            except RefusedDestinationError as exc:
                log.warning("callback refused: %s", exc)
                return None, f"refused: {exc}", True
            except OSError as exc:
                return None, f"ConnectError: {exc}", False
            headers = {"content-type": "application/json", "host": target.host_header}
            extensions = {"sni_hostname": target.sni_hostname} if target.sni_hostname else None
            client = self._client(target.sni_hostname or "")
            try:
                response = await client.post(target.url, content=body, headers=headers, extensions=extensions)
            except httpx.HTTPError as exc:
                return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, False
        if response.is_success:
            return response.status_code, None, False
        moved = " (redirects are not followed)" if response.is_redirect else ""
        return response.status_code, f"HTTP {response.status_code}{moved}", False

    def _client(self, name: str) -> httpx.AsyncClient:
        import httpx

        if name not in self._clients:
            self._clients[name] = httpx.AsyncClient(timeout=self._timeout_s, follow_redirects=False, trust_env=False)
        return self._clients[name]
