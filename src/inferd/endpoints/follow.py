"""Following the endpoint store: a server process sees the admin changes another process made.

Every :data:`INTERVAL_S` a task on the event loop asks SQLite for its ``data_version`` (a counter that moves
when another connection commits; it costs no read of the tables); when it moved, the endpoints are read again
and the routing table swapped in one assignment, as for a change made here. The same tick takes over the
rollouts whose driver is gone (:mod:`inferd.endpoints.lease`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inferd.endpoints.service import Endpoints

log = logging.getLogger(__name__)

INTERVAL_S = 0.5


class Follower:
    def __init__(self, endpoints: Endpoints, interval_s: float = INTERVAL_S) -> None:
        self._endpoints = endpoints
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="inferd-endpoints-follow")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        endpoints = self._endpoints
        seen: int | None = None  # the first tick reads the store again: a change made since open() counts
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                version = endpoints.store.data_version()
                if version != seen:
                    seen = version
                    endpoints.refresh()
                endpoints.recover()
            except Exception:  # a locked or damaged store: keep serving the table we have, try again
                log.exception("following the endpoint store failed")
