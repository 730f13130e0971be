"""Start a coroutine at once, in the caller, and make a task of it only if it has to wait.

Most inferences of a small model never wait: the scheduler has a free instance and the runtime runs inline
(see :mod:`inferd.executors.threads`). A task per request would cost its creation, a trip through the event
loop's ready queue and, at one connection, an extra loop iteration of latency. Python 3.12's
``asyncio.eager_task_factory`` does this for every task; inferd supports 3.11, so the HTTP fast path does
it for its one coroutine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


def start_eagerly(coro: Coroutine[Any, Any, T], on_done: Callable[[T], None],
                  tasks: set[asyncio.Task[Any]]) -> None:
    """Run ``coro`` until it first waits; if it finishes, call ``on_done`` with its result now. Otherwise
    a task finishes it (kept in ``tasks`` until done) and calls ``on_done`` then. ``coro`` must not raise:
    exceptions should have become results (the fast path's errors are responses)."""
    try:
        awaited = coro.send(None)
    except StopIteration as stop:
        on_done(stop.value)
        return
    task = asyncio.get_running_loop().create_task(_Continuation(coro, awaited, on_done))
    tasks.add(task)
    task.add_done_callback(tasks.discard)


class _Continuation(Coroutine[Any, Any, None]):
    """The rest of a coroutine that already ran its first step, as a coroutine a task can drive. The task's
    first step waits on what the coroutine was waiting on, as if the task had run that step itself; a task
    cancelled before its first step cancels that future, as a task waiting on it would."""

    __slots__ = ("_awaited", "_coro", "_on_done", "_started")

    def __init__(self, coro: Coroutine[Any, Any, T], awaited: Any, on_done: Callable[[T], None]) -> None:
        self._coro = coro
        self._awaited = awaited
        self._on_done = on_done
        self._started = False

    def send(self, value: Any) -> Any:
        if not self._started:
            self._started = True
            return self._awaited
        return self._step(self._coro.send, value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        exc = typ if isinstance(typ, BaseException) else typ(val)
        if not self._started:
            self._started = True
            if isinstance(exc, asyncio.CancelledError) and isinstance(self._awaited, asyncio.Future):
                self._awaited.cancel()
                return self._awaited
        return self._step(self._coro.throw, exc)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, None]:
        raise TypeError("a continuation is driven by its task, not awaited")

    def _step(self, step: Callable[[Any], Any], value: Any) -> Any:
        try:
            return step(value)
        except StopIteration as stop:
            self._on_done(stop.value)
            raise
