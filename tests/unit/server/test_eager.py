"""start_eagerly: a coroutine that never waits finishes in the caller; one that waits is resumed from the done
callbacks of what it awaits (no task), in the context it started in, with exceptions and cancellation passed
through, and stays in the server's task set until it is done."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

from inferd.server.eager import start_eagerly

LABEL: contextvars.ContextVar[str] = contextvars.ContextVar("LABEL", default="none")


async def _no_wait(x: int) -> int:
    return x * 2


async def _waits_on(future: asyncio.Future[int]) -> int:
    value = await future
    await asyncio.sleep(0)  # a bare yield
    await asyncio.sleep(0.001)  # a timer's future
    return value + 1


async def _catches(future: asyncio.Future[int]) -> str:
    try:
        await future
    except ValueError as exc:
        return f"caught {exc}"
    return "no error"


async def _label_after(future: asyncio.Future[int]) -> str:
    await future
    return LABEL.get()


async def _until_empty(tasks: set[Any]) -> None:
    for _ in range(1000):
        if not tasks:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"still running: {tasks}")


def test_a_coroutine_that_never_waits_finishes_before_the_call_returns():
    async def main() -> None:
        got: list[int] = []
        tasks: set[Any] = set()
        start_eagerly(_no_wait(21), got.append, tasks)
        assert got == [42]
        assert not tasks

    asyncio.run(main())


def test_a_coroutine_that_waits_finishes_when_what_it_awaits_is_done():
    async def main() -> None:
        got: list[int] = []
        tasks: set[Any] = set()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        start_eagerly(_waits_on(future), got.append, tasks)
        assert got == []
        assert len(tasks) == 1  # a stopping server waits for it
        assert not asyncio.all_tasks() - {asyncio.current_task()}  # and no task was made for it
        future.set_result(5)
        await _until_empty(tasks)
        assert got == [6]

    asyncio.run(main())


def test_an_exception_set_on_the_awaited_future_reaches_the_coroutine():
    async def main() -> None:
        got: list[str] = []
        tasks: set[Any] = set()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        start_eagerly(_catches(future), got.append, tasks)
        future.set_exception(ValueError("boom"))
        await _until_empty(tasks)
        assert got == ["caught boom"]

    asyncio.run(main())


def test_the_coroutine_resumes_in_the_context_it_started_in():
    async def main() -> None:
        got: list[str] = []
        tasks: set[Any] = set()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        token = LABEL.set("request-7")
        start_eagerly(_label_after(future), got.append, tasks)
        LABEL.reset(token)
        future.set_result(1)
        await _until_empty(tasks)
        assert got == ["request-7"]

    asyncio.run(main())


def test_cancelling_it_cancels_what_it_awaits_and_ends_it_without_a_result():
    """What uvicorn does to the tasks left when a graceful shutdown times out."""

    async def main() -> None:
        got: list[int] = []
        tasks: set[Any] = set()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        start_eagerly(_waits_on(future), got.append, tasks)
        [waiting] = tasks
        assert waiting.cancel(msg="graceful shutdown exceeded")
        await _until_empty(tasks)
        assert future.cancelled()
        assert waiting.done()
        assert got == []

    asyncio.run(main())
