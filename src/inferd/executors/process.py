"""``kind = "process"`` model instances: a supervised pool of worker processes, each with its own model.

Why processes: a predict that holds the GIL serves one request at a time however many threads call it; N
workers run N at once, and a crash (segfault, OOM kill) takes down one worker, not the server.

A request's trip: :meth:`ProcessExecutor.run` takes an idle worker, copies the inputs into that worker's
request segment (:mod:`inferd.executors.shm`), sends a small JSON control message down its pipe (protocol in
:mod:`inferd.executors.worker`) and awaits the answer with ``loop.add_reader`` on the pipe: no thread sits
on the hot path. The outputs are copied out of the worker's response segment.

Supervision: one thread watches the process sentinels of running workers and the pipes of loading ones.
A worker that dies idle is replaced at once. One that dies busy is noticed by its request (EOF on the pipe),
which fails with INTERNAL naming the death, and is replaced at once. A replacement that fails to load is
retried after 0.5 s, 1 s, 2 s ... up to ``backoff_cap``; ``ready`` is False until every worker serves.
:class:`WorkerLimits` bounds a call's time (past it the worker is killed, its caller answered
DEADLINE_EXCEEDED, and it is replaced like one that died) and a worker's life (replaced after so many calls or
above a resident-memory limit, for models that leak). Workers die with the server (``PR_SET_PDEATHSIG``).
Workers are started with the spawn method, never fork: the server has threads and an event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from enum import Enum
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import numpy as np

from inferd.backoff import doubling_delay
from inferd.errors import ErrorCode, InferError, internal, unavailable
from inferd.executors import shm
from inferd.executors.limits import WorkerLimits
from inferd.executors.worker import Handle, WorkerDiedError, WorkerLoadError, stop_all
from inferd.runtimes.registry import RuntimeInfo
from inferd.signature import Signature

log = logging.getLogger(__name__)

__all__ = ["ProcessExecutor", "WorkerLimits", "WorkerLoadError"]


class State(Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    DEAD = "dead"  # no process; the supervisor spawns a replacement at restart_at (inf: not yet scheduled)
    CLOSED = "closed"


@dataclass(eq=False, slots=True)
class _Slot:
    worker: Handle | None = None
    state: State = State.DEAD
    failures: int = 0  # replacements in a row that failed to load: sets the back-off
    restart_at: float = 0.0


class ProcessExecutor:
    """``count`` worker processes serving one model version. Thread-safe; ``run`` from any event loop.

    ``_lock`` guards slot states, the idle deque and the waiters. Whoever moves a slot to DEAD owns its old
    worker and retires it (reap, close pipe, unlink segments) exactly once.

    Caveats: ``start`` and ``close`` block (loading; up to ``stop_timeout`` stopping), so call them off the
    event loop. Spawn imports the server's ``__main__`` in each worker, which must be import-safe (inferd's
    entry points are). Workers are daemonic, so a model cannot start multiprocessing children of its own.
    """

    backoff_first = 0.5
    backoff_cap = 10.0
    stop_timeout = 2.0

    def __init__(self, name: str, version: int, load_args: tuple[Any, ...], count: int,
                 limits: WorkerLimits | None = None) -> None:
        self.name, self.version, self.instances, self.restarts = name, version, count, 0
        self.limits = limits or WorkerLimits()
        self.signature = Signature((), ())
        self.last_error = ""  # why the latest replacement failed to load
        self._load_args = load_args
        self._slots = [_Slot() for _ in range(count)]
        self._idle: deque[_Slot] = deque()
        self._waiters: deque[asyncio.Future[_Slot]] = deque()
        self._lock = threading.Lock()
        self._closed = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._supervisor = threading.Thread(target=self._supervise, name=f"inferd-supervisor-{name}", daemon=True)

    @classmethod
    def start(cls, name: str, version: int, info: RuntimeInfo, artifact: Path,  # noqa: PLR0913, PLR0917
              config_folder: Path, options: dict[str, Any], override: Signature | None,
              count: int, limits: WorkerLimits | None = None) -> ProcessExecutor:
        """Spawn ``count`` workers and wait until each has loaded the model (blocking). Raises
        :class:`WorkerLoadError`, a ValueError, with the first worker's error after stopping the others."""
        if count < 1:
            raise ValueError(f"model '{name}': a process executor needs at least one worker, got {count}")
        executor = cls(name, version, (info, artifact, config_folder, options, override), count, limits)
        try:
            executor._start_all()
        except BaseException:
            executor.close()
            raise
        return executor

    @property
    def ready(self) -> bool:
        return not self._closed and all(slot.state in (State.IDLE, State.BUSY) for slot in self._slots)

    @property
    def pids(self) -> list[int]:
        """Process ids of the current workers, loaded or loading."""
        return [slot.worker.pid for slot in self._slots if slot.worker is not None]

    def inline(self, rows: int) -> bool:
        return False  # every call goes to a worker process

    def run_inline(self, inputs: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        raise RuntimeError(f"model {self.name!r} runs in worker processes, never inline")

    async def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        slot = await self._acquire()
        worker = slot.worker
        assert worker is not None
        # Shielded: when the caller gives up (deadline), the worker still finishes and serves again.
        task = asyncio.ensure_future(self._exchange(slot, inputs))
        task.add_done_callback(_retrieve)
        timeout = self.limits.timeout_s
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout or None)
        except TimeoutError:
            if task.done():  # it answered just then: the worker may already serve someone else
                return task.result()
            worker.overran = True
            worker.process.kill()  # its exchange sees the pipe close and has it replaced
            raise InferError(ErrorCode.DEADLINE_EXCEEDED,
                             f"model '{self.name}' did not answer within its execution timeout of {timeout:g} s; "
                             f"its worker process {worker.pid} was killed and is being replaced") from None

    def close(self) -> None:
        """Stop the workers (a stop message, killed after ``stop_timeout``) and unlink every segment."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            idle = {id(s.worker) for s in self._slots if s.state is State.IDLE}
            busy = {id(s.worker) for s in self._slots if s.state is State.BUSY}
            for slot in self._slots:
                slot.state = State.CLOSED
            waiters, self._idle = list(self._waiters), deque()
            self._waiters.clear()
            self._wake_locked()
        for waiter in waiters:
            _fail_soon(waiter, self._closed_error())
        if self._supervisor.is_alive():
            self._supervisor.join()
        workers = [slot.worker for slot in self._slots if slot.worker is not None]
        for slot in self._slots:
            slot.worker = None
        stop_all(workers, idle, busy, self.stop_timeout)
        with self._lock:
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1

    def _start_all(self) -> None:
        for slot in self._slots:
            slot.worker, slot.state = Handle.spawn(self.name, self._load_args), State.STARTING
        pending: dict[Any, Handle] = {slot.worker.conn: slot.worker for slot in self._slots if slot.worker}
        signatures = []
        while pending:
            for conn in wait(list(pending)):
                signatures.append(pending.pop(conn).await_loaded(self.name, self.stop_timeout))
        if any(s != signatures[0] for s in signatures):
            raise WorkerLoadError(f"the workers of model '{self.name}' loaded different signatures")
        self.signature = signatures[0]
        with self._lock:
            for slot in self._slots:
                self._make_idle(slot)
        self._supervisor.start()

    # --- idle workers and the runs waiting for one (runs may come from several event loops) -------------

    async def _acquire(self) -> _Slot:
        with self._lock:
            if self._closed:
                raise self._closed_error()
            if self._idle:
                slot = self._idle.popleft()
                slot.state = State.BUSY
                return slot
            waiter: asyncio.Future[_Slot] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release(waiter.result())  # handed over just as the caller gave up
            raise

    def _make_idle(self, slot: _Slot) -> None:
        """Give a free worker to the longest waiting run, else park it. Call with the lock held."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if waiter.done():
                continue
            try:
                waiter.get_loop().call_soon_threadsafe(self._hand_over, waiter, slot)
            except RuntimeError:  # that run's event loop is closed
                continue
            slot.state = State.BUSY
            return
        slot.state = State.IDLE
        self._idle.append(slot)

    def _hand_over(self, waiter: asyncio.Future[_Slot], slot: _Slot) -> None:
        if waiter.done():
            self._release(slot)
        else:
            waiter.set_result(slot)

    def _release(self, slot: _Slot) -> None:
        with self._lock:
            if slot.state is State.BUSY:
                self._make_idle(slot)

    # --- one request ---------------------------------------------------------------------------------------

    async def _exchange(self, slot: _Slot, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        worker = slot.worker
        assert worker is not None
        try:
            metas = worker.put_inputs(inputs)
        except (ValueError, OSError) as exc:
            self._release(slot)
            raise internal(f"model '{self.name}': cannot pass the inputs to its worker process: {exc}") from None
        try:
            answer = await worker.converse(asyncio.get_running_loop(), metas)
        except WorkerDiedError:
            raise self._lost(slot, worker, died=True) from None
        except OSError as exc:  # no room for a bigger response segment; the worker waits for one: replace it
            self._lost(slot, worker, died=False)
            raise internal(f"model '{self.name}': cannot take the outputs from its worker process: {exc}") from None
        except BaseException:  # cancelled: the worker's state is unknown
            self._lost(slot, worker, died=False)
            raise
        try:
            if answer[0] == "ok":
                return shm.read(worker.response.buf, answer[1])
            raise internal(f"model '{self.name}' failed: {answer[-1]}")
        finally:
            self._finished(slot, worker)

    def _finished(self, slot: _Slot, worker: Handle) -> None:
        worker.served += 1
        recycle = self.limits.recycle_reason(worker.served, worker.pid)
        with self._lock:
            if slot.state is State.BUSY and not worker.exited and not recycle:
                self._make_idle(slot)
                return
        if recycle and not worker.exited:
            log.info("model '%s': replacing worker %d: %s", self.name, worker.pid, recycle)
            self._lost(slot, worker, died=False, quiet=True)
            return
        self._lost(slot, worker, died=True)  # it answered, then died (or close() came)

    def _lost(self, slot: _Slot, worker: Handle, died: bool, quiet: bool = False) -> InferError:
        """Take back a busy worker that died, or whose request was interrupted (or that is due for
        replacement: ``quiet``), and have it replaced."""
        with self._lock:
            closed = slot.state is State.CLOSED
            if not closed:
                _take(slot)
        if closed:  # close() stopped the process; the pipe and the maps are left to us
            worker.dispose()
            return unavailable(f"model '{self.name}' was unloaded while running the request")
        if not died:
            worker.process.kill()
            if not quiet:
                log.warning("model '%s': a request was interrupted; replacing worker %d", self.name, worker.pid)
        worker.retire(self.stop_timeout)
        message = worker.death(self.name, "while running the request")
        if worker.overran:
            message = (f"worker process {worker.pid} of model '{self.name}' was killed: its call ran past the "
                       f"execution timeout of {self.limits.timeout_s:g} s")
        if died:
            log.warning("%s; starting a replacement", message)
        self._schedule_restart(slot, failed=False)
        return internal(message)

    # --- supervision (its own thread, off the request path) ------------------------------------------------

    def _supervise(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                watched = self._watched()
                times = [s.restart_at for s in self._slots if s.state is State.DEAD and s.restart_at < math.inf]
            timeout = max(0.0, min(times) - time.monotonic()) if times else None
            for ready in wait([self._wake_r, *watched], timeout):
                if ready == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                else:
                    self._on_event(*watched[ready])
            self._restart_due()

    def _watched(self) -> dict[Any, tuple[_Slot, Handle]]:
        """What the supervisor waits on: loading workers' pipes, running workers' process sentinels."""
        watched: dict[Any, tuple[_Slot, Handle]] = {}
        for slot in self._slots:
            worker = slot.worker
            if worker is not None and not worker.exited:
                if slot.state is State.STARTING:
                    watched[worker.conn] = (slot, worker)
                elif slot.state in (State.IDLE, State.BUSY):
                    watched[worker.process.sentinel] = (slot, worker)
        return watched

    def _on_event(self, slot: _Slot, worker: Handle) -> None:
        with self._lock:
            if slot.worker is not worker or slot.state in (State.DEAD, State.CLOSED):
                return
            if slot.state is State.BUSY:  # its request sees EOF on the pipe and replaces it
                worker.exited = True
                return
            loading = slot.state is State.STARTING
            if not loading:
                self._idle.remove(slot)
                _take(slot)
        if loading:
            self._finish_loading(slot, worker)
            return
        worker.retire(self.stop_timeout)
        log.warning("%s; starting a replacement", worker.death(self.name, "while idle"))
        self._schedule_restart(slot, failed=False)

    def _finish_loading(self, slot: _Slot, worker: Handle) -> None:
        try:
            signature = worker.await_loaded(self.name, self.stop_timeout)
            if signature != self.signature:
                worker.process.kill()
                raise WorkerLoadError(f"the model's signature changed to {signature.to_dict()}; reload it")
        except WorkerLoadError as exc:
            self.last_error = str(exc)
            log.warning("model '%s': a replacement worker failed to load: %s", self.name, exc)
            with self._lock:
                if slot.state is not State.STARTING:
                    return
                _take(slot)
            worker.retire(self.stop_timeout)
            self._schedule_restart(slot, failed=True)
            return
        with self._lock:
            if slot.state is State.STARTING:
                slot.failures = 0
                self._make_idle(slot)

    def _restart_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [s for s in self._slots if s.state is State.DEAD and s.restart_at <= now and not self._closed]
            for slot in due:
                slot.state = State.STARTING
        for slot in due:
            try:
                worker = Handle.spawn(self.name, self._load_args)
            except Exception as exc:
                self.last_error = f"cannot start a worker process: {exc}"
                log.warning("model '%s': %s", self.name, self.last_error)
                self._schedule_restart(slot, failed=True)
                continue
            with self._lock:
                if not self._closed:
                    slot.worker = worker
                    self.restarts += 1
                    continue
            worker.process.kill()
            worker.retire(self.stop_timeout)

    def _schedule_restart(self, slot: _Slot, failed: bool) -> None:
        with self._lock:
            if self._closed:
                return
            slot.failures = slot.failures + 1 if failed else 0
            delay = doubling_delay(self.backoff_first, slot.failures, self.backoff_cap) if slot.failures else 0.0
            slot.state, slot.worker, slot.restart_at = State.DEAD, None, time.monotonic() + delay
            self._wake_locked()

    def _wake_locked(self) -> None:
        if self._wake_w >= 0:
            with contextlib.suppress(BlockingIOError):  # already full of wake-ups
                os.write(self._wake_w, b"!")

    def _closed_error(self) -> InferError:
        return unavailable(f"model '{self.name}' version {self.version} is unloaded")


def _take(slot: _Slot) -> None:
    """Claim a slot's worker for retiring (call with the lock held); _schedule_restart then sets the time."""
    slot.state, slot.worker, slot.restart_at = State.DEAD, None, math.inf


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a shielded exchange's outcome as seen, for when its caller gave up before it ended."""
    if not task.cancelled():
        task.exception()


def _fail_soon(waiter: asyncio.Future[Any], error: BaseException) -> None:
    def fail() -> None:
        if not waiter.done():
            waiter.set_exception(error)

    with contextlib.suppress(RuntimeError):  # its loop is closed
        waiter.get_loop().call_soon_threadsafe(fail)
