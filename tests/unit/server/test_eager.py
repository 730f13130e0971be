"""start_eagerly: a coroutine that never waits finishes in the caller; one that waits finishes on a task,
with what it awaited, its exceptions and cancellation passed through."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from inferd.server.eager import start_eagerly


async def _no_wait(x: int) -> int:
    return x * 2


async def _waits_on(future: asyncio.Future[int]) -> int:
    value = await future
    await asyncio.sleep(0)
    return value + 1


async def _catches(future: asyncio.Future[int]) -> str:
    try:
        await future
    except ValueError as exc:
        return f"caught {exc}"
    return "no error"


def test_a_coroutine_that_never_waits_finishes_before_the_call_returns():
    async def main() -> None:
        got: list[int] = []
        tasks: set[asyncio.Task[Any]] = set()
        start_eagerly(_no_wait(21), got.append, tasks)
        assert got == [42]
        assert not tasks

    asyncio.run(main())


def test_a_coroutine_that_waits_finishes_on_a_task():
    async def main() -> None:
        got: list[int] = []
        tasks: set[asyncio.Task[Any]] = set()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        start_eagerly(_waits_on(future), got.append, tasks)
        assert got == []
        assert len(tasks) == 1
        future.set_result(5)
        await asyncio.gather(*tasks)
        assert got == [6]
        assert not tasks

    asyncio.run(main())


def test_an_exception_set_on_the_awaited_future_reaches_the_coroutine():
    async def main() -> None:
        got: list[str] = []
        tasks: set[asyncio.Task[Any]] = set()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        start_eagerly(_catches(future), got.append, tasks)
        future.set_exception(ValueError("boom"))
        await asyncio.gather(*tasks)
        assert got == ["caught boom"]

    asyncio.run(main())


def test_cancelling_the_task_cancels_the_coroutine():
    async def main() -> None:
        got: list[int] = []
        tasks: set[asyncio.Task[Any]] = set()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        start_eagerly(_waits_on(future), got.append, tasks)
        [task] = tasks
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert future.cancelled()
        assert got == []

    asyncio.run(main())
