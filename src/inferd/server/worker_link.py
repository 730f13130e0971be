"""How the workers of ``inferd serve --workers N`` reach each other: one Unix socket each in the supervisor's
folder, answering with that worker's own metrics, so that whichever worker a scrape of /metrics lands on answers
for the whole server (:mod:`inferd.observability.worker_metrics`). And a watch on the supervisor: a worker whose
supervisor is gone (killed with -9) stops as if told to, rather than serve on unsupervised."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable

from inferd.observability.worker_metrics import merge
from inferd.server.worker import WorkerRole

log = logging.getLogger(__name__)

_ASK = b"metrics\n"
_PEER_TIMEOUT_S = 2.0
_WATCH_S = 0.5


class WorkerLink:
    def __init__(self, role: WorkerRole, stop: asyncio.Event) -> None:
        self.role = role
        self.own: Callable[[], Awaitable[bytes]] | None = None
        """This worker's metrics, once the app that owns them is built."""
        self._stop = stop
        self._server: asyncio.AbstractServer | None = None
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        path = self.role.socket_path()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._server = await asyncio.start_unix_server(self._answer, path)
        self._watch = asyncio.create_task(self._watch_supervisor(), name="inferd-supervisor-watch")

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(FileNotFoundError):
            self.role.socket_path().unlink()

    async def whole_server(self, own: bytes) -> bytes:
        """``own`` and every other live worker's metrics, as one exposition."""
        mine = self.role.socket_path()
        peers = [p for p in self.role.folder.glob("worker-*.sock") if p != mine]
        answers = await asyncio.gather(*(self._ask(str(path)) for path in peers))
        expositions = {str(self.role.index): own}
        expositions.update(answer for answer in answers if answer is not None)
        return merge(expositions, str(self.role.index), self.role.replacements())

    async def _ask(self, path: str) -> tuple[str, bytes] | None:
        try:
            async with asyncio.timeout(_PEER_TIMEOUT_S):
                reader, writer = await asyncio.open_unix_connection(path)
                try:
                    writer.write(_ASK)
                    index = (await reader.readline()).strip().decode()
                    body = await reader.read()
                finally:
                    writer.close()
        except (OSError, TimeoutError):  # a worker that just died, or is still starting: it has nothing yet
            return None
        return (index, body) if index else None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if await reader.readline() == _ASK and self.own is not None:
                writer.write(f"{self.role.index}\n".encode() + await self.own())
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _watch_supervisor(self) -> None:
        while os.getppid() == self.role.supervisor_pid:
            await asyncio.sleep(_WATCH_S)
        log.error("the supervisor (pid %d) is gone: stopping", self.role.supervisor_pid)
        self._stop.set()
