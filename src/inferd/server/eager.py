"""Run a coroutine at once, in the caller, and without a task when it has to wait.

Most inferences of a small model never wait: the scheduler has a free instance and the runtime runs inline
(see :mod:`inferd.executors.threads`). A task per request would cost its creation, a trip through the event
loop's ready queue and, at one connection, an extra loop iteration of latency. Python 3.12's
``asyncio.eager_task_factory`` does this for every task; inferd supports 3.11, so the HTTP fast path does
it for its one coroutine. (The plain requests, nearly all of them, do not even have a coroutine: see
:meth:`inferd.dataplane.DataPlane.infer_plain_soon`. This is for the others.)

Requests that do wait (those batched at the end of an event-loop turn: at many connections, most of them) wait
on one future each. A :class:`Resumption` sends the coroutine on from that future's done callback, which is
what a task does in the end, without the task's creation, registration and its extra loop iterations (counted
with ``benchmarks/instructions.py``: a tenth of the instructions of a batched request went to them).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


def start_eagerly(coro: Coroutine[Any, Any, T], on_done: Callable[[T], None], tasks: set[Any]) -> None:
    """Run ``coro`` until it first waits; if it finishes, call ``on_done`` with its result now. Otherwise a
    :class:`Resumption` finishes it (kept in ``tasks`` until done, where a server that stops waits for it or
    cancels it as it would a task) and calls ``on_done`` then. ``coro`` must not raise: exceptions should have
    become results (the fast path's errors are responses)."""
    try:
        awaited = coro.send(None)
    except StopIteration as stop:
        on_done(stop.value)
        return
    Resumption(coro, on_done, tasks).resume_after(awaited)


class Resumption:
    """Drives a coroutine that is waiting, from the done callbacks of the futures it awaits, in the context it
    started in (its request id). Like a task, ``cancel()`` cancels the future it waits on, which raises
    ``CancelledError`` in it."""

    __slots__ = ("_context", "_coro", "_on_done", "_tasks", "_waiting")

    def __init__(self, coro: Coroutine[Any, Any, T], on_done: Callable[[T], None], tasks: set[Any]) -> None:
        self._coro = coro
        self._on_done = on_done
        self._tasks = tasks
        self._context = contextvars.copy_context()
        self._waiting: asyncio.Future[Any] | None = None
        tasks.add(self)

    def resume_after(self, awaited: Any) -> None:
        """Resume when ``awaited`` (what the coroutine yielded) is done."""
        if awaited is None:  # a bare yield (asyncio.sleep(0)): the next turn of the loop
            asyncio.get_running_loop().call_soon(self._step, None, context=self._context)
            return
        if getattr(awaited, "_asyncio_future_blocking", None) is None:
            self._step(RuntimeError(f"a coroutine on the HTTP fast path awaited {awaited!r}, not a future"))
            return
        awaited._asyncio_future_blocking = False
        self._waiting = awaited
        awaited.add_done_callback(self._wake, context=self._context)

    def cancel(self, msg: Any = None) -> bool:
        waiting = self._waiting
        return waiting is not None and waiting.cancel(msg)

    def done(self) -> bool:
        return self not in self._tasks

    def _wake(self, future: asyncio.Future[Any]) -> None:
        self._waiting = None
        self._step(None)

    def _step(self, error: BaseException | None) -> None:
        try:
            awaited = self._coro.send(None) if error is None else self._coro.throw(error)
        except StopIteration as stop:
            self._tasks.discard(self)
            self._on_done(stop.value)
        except asyncio.CancelledError:
            self._tasks.discard(self)  # the server is stopping and gave up on it: no response to send
        except Exception:
            self._tasks.discard(self)
            log.exception("a request on the HTTP fast path failed without an answer")
        except BaseException:
            self._tasks.discard(self)
            raise
        else:
            self.resume_after(awaited)
