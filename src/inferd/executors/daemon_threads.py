"""A fixed set of daemon threads that run model calls, for in-process instances.

Why not :class:`concurrent.futures.ThreadPoolExecutor`: its threads are joined when the interpreter exits,
so one model call that never returns keeps the server from ever exiting, whatever the shutdown does. These
threads are daemons: a call still running at exit is abandoned with the process. :meth:`shutdown` waits for
running calls only as long as it is told to.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from queue import SimpleQueue
from typing import Any

_Job = tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None


class DaemonThreads:
    def __init__(self, count: int, name: str) -> None:
        self._jobs: SimpleQueue[_Job] = SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(count)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._jobs.put((future, fn, args))
        return future

    def shutdown(self, wait_s: float | None) -> bool:
        """Let the threads finish the calls they have and stop; wait for them up to ``wait_s`` seconds (None:
        as long as it takes). Whether every thread stopped in that time."""
        for _ in self._threads:
            self._jobs.put(None)
        deadline = None if wait_s is None else time.monotonic() + wait_s
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            _run(*job)
            del job  # the inputs are not kept alive while the thread is idle


def _run(future: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = fn(*args)
    except BaseException as exc:  # handed to the caller, as ThreadPoolExecutor does
        future.set_exception(exc)
    else:
        future.set_result(result)
