"""The scheduler with real executors over python models: batching reaches the right callers, queue limits,
deadlines, priorities, cancellation, shapes that must not mix, failures."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Mapping

import numpy as np
import pytest

from inferd.errors import ErrorCode, InferError
from inferd.scheduling.policy import SchedulingPolicy
from inferd.scheduling.scheduler import RunResult, Scheduler


class Recorder:
    """An executor that runs a function on a thread, records the batches it saw, and can be held shut."""

    def __init__(self, fn=None, instances: int = 1) -> None:
        self.instances = instances
        self.batches: list[int] = []
        self.order: list[float] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fn = fn or (lambda inputs: {"y": inputs["x"] * 2})

    @property
    def ready(self) -> bool:
        return True

    def inline(self, rows: int) -> bool:
        return False

    def run_inline(self, inputs: dict[str, np.ndarray], rows: int) -> Mapping[str, np.ndarray]:
        raise AssertionError("a Recorder runs on a thread")

    async def run(self, inputs: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        self.batches.append(len(inputs["x"]))
        self.order.extend(inputs["x"][:, 0].tolist())
        await asyncio.get_running_loop().run_in_executor(None, self.gate.wait)
        return self.fn(inputs)

    def close(self) -> None:
        pass


async def submit(scheduler: Scheduler, inputs: dict[str, np.ndarray], rows: int, priority: object = None,
                 timeout_us: int | None = None, is_disconnected=None) -> RunResult:
    """Scheduler.submit for a coroutine: a future is the waiter (cancelling the caller cancels it)."""
    future: asyncio.Future[RunResult] = asyncio.get_running_loop().create_future()
    scheduler.submit(inputs, rows, future, priority, timeout_us, is_disconnected)
    return await future


def rows(*values: float) -> dict[str, np.ndarray]:
    return {"x": np.array([[v, v] for v in values], dtype=np.float32)}


def held(policy: SchedulingPolicy) -> tuple[Recorder, Scheduler]:
    """A scheduler whose single instance will stay busy until ``executor.gate.set()``."""
    executor = Recorder()
    executor.gate.clear()
    return executor, Scheduler("m", executor, policy)


async def occupy(scheduler: Scheduler) -> asyncio.Future:
    """Start a request that takes the instance, and let it reach the executor."""
    running = asyncio.ensure_future(submit(scheduler, rows(0), 1))
    await asyncio.sleep(0.01)
    return running


def batching(**kw) -> SchedulingPolicy:
    return SchedulingPolicy(**{"max_batch_size": 8, "dynamic_batching": True, "max_queue_delay_us": 20_000, **kw})


def test_batched_results_reach_the_right_callers():
    executor = Recorder()
    scheduler = Scheduler("m", executor, batching(max_batch_size=16))
    rng = random.Random(7)

    requests = [rows(*[rng.uniform(-100, 100) for _ in range(rng.randint(1, 4))]) for _ in range(200)]

    async def main():

        async def one(inputs):
            await asyncio.sleep(rng.random() / 100)
            result = await submit(scheduler, inputs, len(inputs["x"]))
            np.testing.assert_array_equal(result.outputs["y"], inputs["x"] * 2)
            return result.batch_rows

        return await asyncio.gather(*(one(r) for r in requests))

    batch_rows = asyncio.run(main())
    assert max(executor.batches) > 1  # requests were merged
    assert max(executor.batches) <= 16
    assert sum(executor.batches) == sum(len(r["x"]) for r in requests)  # every row ran exactly once
    assert max(batch_rows) > 1


def test_outputs_are_checked_once_per_model_call_and_a_broken_batch_fails_every_caller():
    """The check runs on the whole batch before it is split; what it gives back is what the callers get."""
    checked: list[int] = []

    def check(outputs, rows):
        checked.append(rows)
        if rows == 3:
            raise InferError(ErrorCode.INTERNAL, f"model output 'y' is wrong for a batch of {rows}")
        return {"y": outputs["y"].astype(np.float64)}

    scheduler = Scheduler("m", Recorder(), batching(max_queue_delay_us=0), check)

    async def main():
        good = await asyncio.gather(*(submit(scheduler, rows(i), 1) for i in range(4)))
        bad = await asyncio.gather(*(submit(scheduler, rows(i), 1) for i in range(3)), return_exceptions=True)
        return good, bad

    good, bad = asyncio.run(main())
    assert checked == [4, 3]
    assert [r.outputs["y"].tolist() for r in good] == [[[2.0 * i, 2.0 * i]] for i in range(4)]
    assert all(r.outputs["y"].dtype == np.float64 for r in good)
    assert all(isinstance(e, InferError) and "wrong for a batch of 3" in e.message for e in bad)


def test_requests_with_different_shapes_never_share_a_batch():
    seen: list[tuple[int, ...]] = []

    def fn(inputs):
        seen.append(inputs["x"].shape[1:])
        return {"y": inputs["x"].sum(axis=1)}

    executor = Recorder(fn)
    scheduler = Scheduler("m", executor, batching())

    async def main():
        narrow = {"x": np.ones((1, 2), dtype=np.float32)}
        wide = {"x": np.ones((1, 3), dtype=np.float32)}
        results = await asyncio.gather(*(submit(scheduler, narrow if i % 2 else wide, 1) for i in range(12)))
        return [r.outputs["y"].tolist() for r in results]

    outputs = asyncio.run(main())
    assert outputs == [[3.0] if i % 2 == 0 else [2.0] for i in range(12)]
    assert set(seen) == {(2,), (3,)}


def test_a_failing_batch_fails_every_caller_and_the_next_works():
    calls = {"n": 0}

    def fn(inputs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise InferError(ErrorCode.INTERNAL, "model 'm' failed: boom")
        return {"y": inputs["x"]}

    scheduler = Scheduler("m", Recorder(fn), batching(max_queue_delay_us=50_000))

    async def main():
        first = await asyncio.gather(*(submit(scheduler, rows(i), 1) for i in range(4)), return_exceptions=True)
        second = await submit(scheduler, rows(9), 1)
        return first, second

    first, second = asyncio.run(main())
    assert all(isinstance(e, InferError) and "boom" in e.message for e in first)
    assert second.outputs["y"].tolist() == [[9.0, 9.0]]


def test_wrong_output_length_for_a_merged_batch_fails_all():
    scheduler = Scheduler("m", Recorder(lambda inputs: {"y": inputs["x"][:1]}), batching(max_queue_delay_us=50_000))

    async def main():
        return await asyncio.gather(*(submit(scheduler, rows(i), 1) for i in range(3)), return_exceptions=True)

    errors = asyncio.run(main())
    assert all(isinstance(e, InferError) and e.code is ErrorCode.INTERNAL for e in errors)
    assert "for a batch of 3" in errors[0].message


def test_queue_full_is_refused_at_once_with_retry_after():
    executor, scheduler = held(SchedulingPolicy(max_queue_size=2))

    async def main():
        running = asyncio.ensure_future(submit(scheduler, rows(0), 1))
        queued = [asyncio.ensure_future(submit(scheduler, rows(i), 1)) for i in (1, 2)]
        await asyncio.sleep(0.05)
        with pytest.raises(InferError) as info:
            await submit(scheduler, rows(3), 1)
        executor.gate.set()
        await asyncio.gather(running, *queued)
        return info.value

    error = asyncio.run(main())
    assert error.code is ErrorCode.UNAVAILABLE
    assert "queue is full (2 requests waiting)" in error.message
    assert error.retry_after_s is not None
    assert error.retry_after_s >= 1


def test_a_request_whose_deadline_passes_in_the_queue_never_runs():
    executor, scheduler = held(SchedulingPolicy())

    async def main():
        running = await occupy(scheduler)
        started = time.monotonic()
        with pytest.raises(InferError) as info:
            await submit(scheduler, rows(1), 1, timeout_us=30_000)
        waited = time.monotonic() - started
        executor.gate.set()
        await running
        await submit(scheduler, rows(2), 1)
        return info.value, waited

    error, waited = asyncio.run(main())
    assert error.code is ErrorCode.DEADLINE_EXCEEDED
    assert "timed out after 30000 µs waiting in the queue" in error.message
    assert waited < 1.0  # answered at its deadline, not when the instance freed up
    assert 1.0 not in executor.order  # never ran


def test_higher_priority_waiting_requests_run_first():
    executor, scheduler = held(SchedulingPolicy(priority_levels=3, default_priority=2))

    async def main():
        running = await occupy(scheduler)
        low = [asyncio.ensure_future(submit(scheduler, rows(10 + i), 1, priority=3)) for i in range(2)]
        mid = asyncio.ensure_future(submit(scheduler, rows(20), 1))
        high = asyncio.ensure_future(submit(scheduler, rows(30), 1, priority=1))
        await asyncio.sleep(0.01)
        executor.gate.set()
        await asyncio.gather(running, *low, mid, high)

    asyncio.run(main())
    assert executor.order == [0.0, 30.0, 20.0, 10.0, 11.0]


def test_bad_priority_is_invalid():
    scheduler = Scheduler("m", Recorder(), SchedulingPolicy(priority_levels=2))
    with pytest.raises(InferError, match="priority must be an integer from 1 \\(highest\\) to 2") as info:
        asyncio.run(submit(scheduler, rows(1), 1, priority=5))
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


def test_a_cancelled_request_is_dropped_before_it_runs():
    executor, scheduler = held(SchedulingPolicy())

    async def main():
        running = await occupy(scheduler)
        abandoned = asyncio.ensure_future(submit(scheduler, rows(1), 1))
        gone = {"flag": False}
        departed = asyncio.ensure_future(submit(scheduler, rows(2), 1, is_disconnected=lambda: gone["flag"]))
        kept = asyncio.ensure_future(submit(scheduler, rows(3), 1))
        await asyncio.sleep(0.01)
        abandoned.cancel()
        gone["flag"] = True
        executor.gate.set()
        await running
        await kept
        with pytest.raises(InferError, match="went away"):
            await departed

    asyncio.run(main())
    assert executor.order == [0.0, 3.0]


def test_batching_waits_at_most_the_queue_delay():
    executor = Recorder()
    scheduler = Scheduler("m", executor, batching(max_queue_delay_us=30_000))

    async def main():
        started = time.monotonic()
        await submit(scheduler, rows(1), 1)
        return time.monotonic() - started

    waited = asyncio.run(main())
    assert 0.025 <= waited < 1.0
    assert executor.batches == [1]


def test_preferred_batch_size_dispatches_without_waiting_for_the_delay():
    executor = Recorder()
    scheduler = Scheduler("m", executor, batching(max_queue_delay_us=5_000_000, preferred_batch_sizes=(4,)))

    async def main():
        return await asyncio.gather(*(submit(scheduler, rows(i), 1) for i in range(4)))

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 2.0
    assert executor.batches == [4]


def test_unload_fails_the_waiting_requests():
    executor, scheduler = held(SchedulingPolicy())

    async def main():
        running = await occupy(scheduler)
        waiting = asyncio.ensure_future(submit(scheduler, rows(1), 1))
        await asyncio.sleep(0.01)
        scheduler.close()
        executor.gate.set()
        await running
        with pytest.raises(InferError, match="was unloaded"):
            await waiting

    asyncio.run(main())


# -- zero-delay batching: one batch per turn of the event loop --------------------------------------------
class InlineRecorder:
    """An executor that runs on the event loop without ever waiting, as a fast compiled model does."""

    instances = 1
    ready = True

    def __init__(self) -> None:
        self.batches: list[int] = []

    def inline(self, rows: int) -> bool:
        return True

    def run_inline(self, inputs: dict[str, np.ndarray], rows: int) -> Mapping[str, np.ndarray]:
        self.batches.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2}

    async def run(self, inputs: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return self.run_inline(inputs, len(inputs["x"]))

    def close(self) -> None:
        pass


async def ran_at_once(scheduler: Scheduler, value: float) -> bool:
    """Submit one request; whether it finished in its first step (without waiting for the end of the turn)."""
    task = asyncio.get_running_loop().create_task(submit(scheduler, rows(value), 1))
    await asyncio.sleep(0)  # the task takes its first step; an end-of-turn dispatch would come after this
    at_once = task.done()
    result = await task
    assert result.outputs["y"].tolist() == [[value * 2, value * 2]]
    return at_once


def test_zero_delay_batching_stacks_the_requests_of_one_loop_turn():
    executor = InlineRecorder()
    scheduler = Scheduler("m", executor, batching(max_queue_delay_us=0, max_batch_size=16))

    async def main():
        values = [float(v) for v in range(10)]
        results = await asyncio.gather(*(submit(scheduler, rows(v), 1) for v in values))  # all start in one turn
        for value, result in zip(values, results, strict=True):
            assert result.outputs["y"].tolist() == [[value * 2, value * 2]]
        alone = await submit(scheduler, rows(7), 1)
        return alone

    alone = asyncio.run(main())
    assert executor.batches == [10, 1]  # one turn, one batch; then a request alone
    assert alone.outputs["y"].tolist() == [[14.0, 14.0]]


def test_zero_delay_batching_runs_lone_requests_at_once_until_others_join():
    from inferd.scheduling.scheduler import _PROBE_EVERY, _SOLO_TURNS

    executor = InlineRecorder()
    scheduler = Scheduler("m", executor, batching(max_queue_delay_us=0))

    async def main():
        detours = []
        for i in range(_SOLO_TURNS + 2 * _PROBE_EVERY):  # one client: one request at a time
            if not await ran_at_once(scheduler, float(i)):
                detours.append(i)
        executor.batches.clear()
        burst = await asyncio.gather(*(submit(scheduler, rows(float(v)), 1) for v in range(3 * _PROBE_EVERY)))
        again = await asyncio.gather(*(submit(scheduler, rows(float(v)), 1) for v in range(5)))
        return detours, burst, again

    detours, burst, again = asyncio.run(main())
    # the first turns each gathered one request; then lone requests ran at once, but for the probes
    assert detours[:_SOLO_TURNS] == list(range(_SOLO_TURNS))
    assert 1 <= len(detours) - _SOLO_TURNS <= 3
    # many at once: the first probe was joined by the rest of the turn, and batching resumed
    assert [r.outputs["y"][0, 0] for r in burst] == [2.0 * v for v in range(3 * _PROBE_EVERY)]
    assert max(executor.batches[:-1]) > 1
    assert executor.batches[-1] == 5
    assert [r.outputs["y"][0, 0] for r in again] == [2.0 * v for v in range(5)]


def test_a_caller_gone_from_a_turns_batch_is_failed_and_the_others_get_their_own_rows():
    executor = InlineRecorder()
    scheduler = Scheduler("m", executor, batching(max_queue_delay_us=0, max_batch_size=16))

    async def main():
        calls = [submit(scheduler, rows(float(v)), 1, is_disconnected=(lambda v=v: v == 2)) for v in range(5)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(main())
    assert executor.batches == [4]  # the departed caller's request did not run
    assert isinstance(results[2], InferError)
    assert "went away" in results[2].message
    for value in (0, 1, 3, 4):
        result = results[value]
        assert result.output("y").tolist() == [[value * 2.0, value * 2.0]]  # its own row of the batch's output
        assert result.outputs["y"].tolist() == [[value * 2.0, value * 2.0]]
        assert len(result.batch_outputs["y"]) == 4


# -- submit: answered through a waiter (the DataPlane's) ------------------------------------------------------
class Outcomes:
    """Waiters for submit that keep what each request is told (a RunResult or an error), by its value."""

    def __init__(self) -> None:
        self.got: dict[float, object] = {}

    def of(self, value: float) -> Told:
        return Told(self, value)

    def rows_of(self, value: float) -> list[list[float]]:
        result = self.got[value]
        assert not isinstance(result, BaseException), result
        return result.output("y").tolist()


class Told:
    def __init__(self, outcomes: Outcomes, value: float) -> None:
        self.outcomes = outcomes
        self.value = value

    def done(self) -> bool:
        return self.value in self.outcomes.got

    def set_result(self, result: object) -> None:
        assert not self.done(), "answered twice"
        self.outcomes.got[self.value] = result

    set_exception = set_result


def test_submit_runs_a_lone_request_before_it_returns():
    executor = InlineRecorder()
    scheduler = Scheduler("m", executor, SchedulingPolicy(max_batch_size=8))  # no batching: runs at once
    outcomes = Outcomes()

    async def main():
        scheduler.submit(rows(3), 1, outcomes.of(3))
        assert outcomes.rows_of(3) == [[6.0, 6.0]]  # already answered

    asyncio.run(main())
    assert executor.batches == [1]


def test_submit_batches_a_turn_and_gives_each_caller_its_rows():
    executor = InlineRecorder()
    scheduler = Scheduler("m", executor, batching(max_queue_delay_us=0, max_batch_size=16))
    outcomes = Outcomes()
    values = [float(v) for v in range(6)]

    async def main():
        for value in values:
            scheduler.submit(rows(value), 1, outcomes.of(value))
        assert not outcomes.got  # waiting for the end of the turn
        await asyncio.sleep(0)

    asyncio.run(main())
    assert executor.batches == [6]
    for value in values:
        assert outcomes.rows_of(value) == [[value * 2, value * 2]]
    counted = [outcomes.got[v].ran_batch for v in values]
    assert counted == [True] + [False] * 5  # the batch's model call is counted once


def test_submit_on_a_thread_executor_answers_when_the_batch_is_done():
    executor = Recorder()
    scheduler = Scheduler("m", executor, batching(max_queue_delay_us=0, max_batch_size=16))
    outcomes = Outcomes()

    async def main():
        for value in (1.0, 2.0, 3.0):
            scheduler.submit(rows(value), 1, outcomes.of(value))
        for _ in range(200):
            if len(outcomes.got) == 3:
                return
            await asyncio.sleep(0.01)

    asyncio.run(main())
    assert executor.batches == [3]
    assert [outcomes.rows_of(v) for v in (1.0, 2.0, 3.0)] == [[[2.0, 2.0]], [[4.0, 4.0]], [[6.0, 6.0]]]


def test_submit_errors_reach_the_function_queue_full_deadline_departed_unloaded():
    executor, scheduler = held(SchedulingPolicy(max_queue_size=3, default_timeout_us=30_000))
    outcomes = Outcomes()
    gone = {"flag": False}

    async def main():
        running = await occupy(scheduler)
        scheduler.submit(rows(1), 1, outcomes.of(1))  # will time out (the model default: 30 ms)
        await asyncio.sleep(0.1)
        assert isinstance(outcomes.got[1], InferError)
        scheduler.submit(rows(2), 1, outcomes.of(2), is_disconnected=lambda: gone["flag"])
        scheduler.submit(rows(3), 1, outcomes.of(3))
        scheduler.submit(rows(4), 1, outcomes.of(4))
        scheduler.submit(rows(5), 1, outcomes.of(5))  # the queue holds 3
        assert isinstance(outcomes.got[5], InferError)  # refused before submit returned
        gone["flag"] = True
        executor.gate.set()
        await running
        for _ in range(100):
            if 3 in outcomes.got:
                break
            await asyncio.sleep(0.01)
        executor.gate.clear()
        held_again = await occupy(scheduler)
        scheduler.submit(rows(6), 1, outcomes.of(6))
        scheduler.close()
        executor.gate.set()
        await held_again

    asyncio.run(main())
    expected = {1: (ErrorCode.DEADLINE_EXCEEDED, "timed out after 30000 µs"), 2: (ErrorCode.UNAVAILABLE, "went away"),
                5: (ErrorCode.UNAVAILABLE, "queue is full"), 6: (ErrorCode.UNAVAILABLE, "was unloaded")}
    for value, (code, words) in expected.items():
        error = outcomes.got[value]
        assert isinstance(error, InferError), (value, error)
        assert error.code is code, (value, error)
        assert words in error.message, (value, error)
    assert outcomes.got[5].retry_after_s >= 1
    assert outcomes.rows_of(3) == [[6.0, 6.0]]
    assert outcomes.rows_of(4) == [[8.0, 8.0]]
    assert not {1.0, 2.0, 6.0} & set(executor.order)


def test_a_waiter_that_raises_does_not_keep_the_others_from_their_answers(caplog):
    executor = InlineRecorder()
    scheduler = Scheduler("m", executor, batching(max_queue_delay_us=0, max_batch_size=16))
    outcomes = Outcomes()

    class Broken(Told):
        def set_result(self, result: object) -> None:
            raise RuntimeError("the caller's own bug")

    broken = Broken(Outcomes(), 2)

    async def main():
        scheduler.submit(rows(1), 1, outcomes.of(1))
        scheduler.submit(rows(2), 1, broken)
        scheduler.submit(rows(3), 1, outcomes.of(3))
        await asyncio.sleep(0)

    asyncio.run(main())
    assert executor.batches == [3]
    assert outcomes.rows_of(1) == [[2.0, 2.0]]
    assert outcomes.rows_of(3) == [[6.0, 6.0]]
    assert "answering a request to a model failed" in caplog.text


def test_batches_queued_behind_an_inline_batch_run_one_after_another_without_recursion():
    executor = InlineRecorder()
    scheduler = Scheduler("m", executor, batching(max_queue_delay_us=0, max_batch_size=1, max_queue_size=5000))
    outcomes = Outcomes()

    async def main():
        for value in range(3000):  # 3,000 batches of one, all queued in one turn
            scheduler.submit(rows(float(value)), 1, outcomes.of(float(value)))
        await asyncio.sleep(0)

    asyncio.run(main())
    assert len(executor.batches) == 3000
    assert all(outcomes.rows_of(float(v)) == [[2.0 * v, 2.0 * v]] for v in range(3000))
