"""Retention: finished jobs older than the TTL lose their payloads and turn ``expired``; a TTL later their
records go too. Runs at start and then periodically."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from inferd.jobs.payloads import PayloadFiles
from inferd.jobs.store import JobStore

log = logging.getLogger(__name__)


def sweep_interval(ttl_s: float) -> float:
    """How often to sweep: a tenth of the TTL, between 0.1 s and 5 minutes."""
    return min(max(ttl_s / 10, 0.1), 300.0)


class Retention:
    def __init__(self, store: JobStore, files: PayloadFiles, ttl_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._files = files
        self.ttl_s = ttl_s
        self._clock = clock

    async def sweep(self) -> int:
        """Expire what is due now; returns how many payload files were deleted."""
        now = self._clock()
        names = await self._store.expire(now - self.ttl_s, now)
        if names:
            await asyncio.to_thread(self._files.delete, names)
        return len(names)

    async def run(self) -> None:
        while True:
            try:
                deleted = await self.sweep()
                if deleted:
                    log.info("retention: deleted %d payload files of expired jobs", deleted)
            except Exception:  # keep sweeping later
                log.exception("retention sweep failed")
            await asyncio.sleep(sweep_interval(self.ttl_s))
