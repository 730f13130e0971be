"""Repository polling (``poll_s``): the repository folder is looked at every so often, and the models follow it.

- A new model folder is loaded (with model control on-demand: it loads on its first request).
- A model whose folder changed (model.toml, a version folder added or removed, an artifact replaced) is read again
  aside, with its version policy deciding what is served; the new versions take new requests while the old ones
  finish theirs (drain), then close. No request fails during the switch.
- A change that cannot be served (an invalid model.toml, no version that loads) leaves the old versions serving;
  the error is logged and shown in the repository index (the rows' ``reason``) until the folder changes again.
- A removed model folder: new requests get NOT_FOUND; its requests in flight finish, then it is unloaded.
- Under a memory budget (model control on-demand), a reload is a load like any other
  (:meth:`OnDemand.within_budget`): the new versions load beside the old ones, so room for them is made first;
  when none can be made, the old versions keep serving with the budget's message as the error, and the next poll
  tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from inferd.errors import ErrorCode, InferError
from inferd.repository import Model, ModelRepository, close_loaded, take_out

if TYPE_CHECKING:
    from inferd.on_demand import OnDemand

log = logging.getLogger(__name__)

Fingerprint = tuple[tuple[str, int, int], ...]
"""A model folder's files that decide what it serves: (relative path, size, modification time in ns)."""

DRAIN_CHECK_S = 0.05
"""How often a replaced or removed model is checked for requests still in flight."""


def fingerprint(folder: Path) -> Fingerprint:
    """The model folder's files and those of its version folders (one level down), with size and time."""
    found: list[tuple[str, int, int]] = []
    for path in (folder, *sorted(p for p in folder.iterdir() if p.is_dir())):
        for entry in sorted(path.iterdir()):
            with contextlib.suppress(OSError):  # a file removed while we look: the next poll sees it gone
                stat = entry.stat()
                if entry.is_file() or entry.is_dir():
                    found.append((str(entry.relative_to(folder)), stat.st_size if entry.is_file() else 0,
                                  stat.st_mtime_ns if entry.is_file() else 0))
    return tuple(found)


def scan(repository: ModelRepository) -> dict[str, Fingerprint]:
    """Every model folder on disk now, with its fingerprint (blocks: run it on a thread)."""
    found: dict[str, Fingerprint] = {}
    for name in repository.names():
        with contextlib.suppress(OSError):
            found[name] = fingerprint(repository.root / name)
    return found


class RepositoryPoller:
    """Follows the repository folder every ``interval_s``. Without ``budget`` (model control startup) new models
    load at once; with it (model control on-demand) they wait for their first request, a changed model that is not
    loaded is only forgotten (its next request reads it afresh), and reloads load under its memory budget."""

    def __init__(self, repository: ModelRepository, interval_s: float, pool: ThreadPoolExecutor,
                 budget: OnDemand | None = None) -> None:
        self.repository = repository
        self.interval_s = interval_s
        self._pool = pool
        self._budget = budget
        self._load_new = budget is None
        self._no_room: set[str] = set()
        """Models whose change waits for room under the memory budget (tried again at every poll)."""
        self._seen: dict[str, Fingerprint] = {}
        self._task: asyncio.Task[None] | None = None
        self._draining: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """What is on disk now is what was loaded at start; changes from here on are followed."""
        self._seen = await asyncio.get_running_loop().run_in_executor(self._pool, scan, self.repository)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._draining):
            task.cancel()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.poll()
            except Exception:  # one bad poll must not end polling
                log.exception("polling the model repository %s failed", self.repository.root)

    async def poll(self) -> None:
        """Look at the folder once and follow what changed."""
        loop = asyncio.get_running_loop()
        now = await loop.run_in_executor(self._pool, scan, self.repository)
        before, self._seen = self._seen, now
        for name in sorted(set(before) - set(now)):
            self._removed(name)
        for name in sorted(now):
            if before.get(name) != now[name] and not await self._changed(name, new=name not in before):
                self._seen[name] = before.get(name, ())  # not followed yet (no room now): the next poll retries

    def _removed(self, name: str) -> None:
        model = self.repository.forget(name)
        log.info("model %s: its folder is gone; unloading it once its requests in flight finish", name)
        if model is not None:
            self._drain(model)

    async def _changed(self, name: str, new: bool) -> bool:
        """Follow a new or changed model folder; False when it has to wait: the memory budget is full (of models
        pinned or busy), which the next poll may find otherwise."""
        current = self.repository.known(name)
        serving = current is not None and current.latest_ready() is not None
        if not serving and not self._load_new:
            self.repository.forget(name)  # on demand and not serving: its next request reads the folder afresh
            return True
        if name not in self._no_room:
            log.info("model %s: %s; loading it", name, "new folder" if new else "its folder changed")
        try:
            model = await self._read_aside(name)
        except InferError as exc:  # under the memory budget (model control on-demand, so this model serves)
            if current is not None:
                _keep_serving(current, exc.message)
            if exc.code is ErrorCode.UNAVAILABLE:  # the budget is full now; larger than all of it: for good
                self._no_room.add(name)
                return False
            self._no_room.discard(name)
            return True
        self._no_room.discard(name)
        if model.latest_ready() is None and current is not None and serving:
            _keep_serving(current, model.reason or "; ".join(
                f"version {v.version}: {v.reason}" for v in model.versions.values() if v.reason) or "no version loads")
            self._drain(model)  # whatever of it did load
            return True
        previous = self.repository.install(model)
        if previous is not None:
            self._drain(previous)
        return True

    async def _read_aside(self, name: str) -> Model:
        loop = asyncio.get_running_loop()

        def read() -> asyncio.Future[Model]:
            return loop.run_in_executor(self._pool, self.repository.read_aside, name)

        return await (read() if self._budget is None else self._budget.within_budget(name, read))

    def _drain(self, model: Model) -> None:
        task = asyncio.get_running_loop().create_task(self._retire(model))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def _retire(self, model: Model) -> None:
        """Close a model no longer served once the requests it was given are answered."""
        while any(v.in_flight for v in model.versions.values()):
            await asyncio.sleep(DRAIN_CHECK_S)
        taken = take_out(model)
        if taken:
            await asyncio.get_running_loop().run_in_executor(self._pool, close_loaded, model.name, taken)


def _keep_serving(current: Model, error: str) -> None:
    """A change of the model's folder could not be served: the versions serving now go on, with the error shown."""
    message = f"its folder changed but cannot be served, the previous versions still are: {error}"
    if message != current.reload_error:  # said once, not at every poll that tries again
        log.warning("model %s: %s", current.name, message)
    current.reload_error = message
