"""ThreadExecutor: inline on the event loop only for inline-safe runtimes and short expected calls."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from inferd.errors import ErrorCode, InferError
from inferd.executors.threads import INLINE_BELOW_NS, ThreadExecutor
from inferd.signature import Signature


class Probe:
    """Records the thread each call ran on; sleeps for as many ms as the input says."""

    signature = Signature((), ())

    def __init__(self, inline_safe: bool) -> None:
        self.inline_safe = inline_safe
        self.threads: list[int] = []

    def predict(self, inputs):
        self.threads.append(threading.get_ident())
        time.sleep(float(inputs["ms"].sum()) / 1000)
        return {"y": inputs["ms"]}

    def close(self) -> None:
        pass


def calls(executor: ThreadExecutor, values: list[np.ndarray]) -> int:
    async def main():
        for value in values:
            await executor.run({"ms": value})
        return threading.get_ident()

    return asyncio.run(main())


def test_fast_inline_safe_model_runs_on_the_event_loop():
    probe = Probe(inline_safe=True)
    loop_thread = calls(ThreadExecutor("m", probe), [np.zeros(1)] * 10)
    assert probe.threads[0] != loop_thread  # first call: not measured yet, so a thread
    assert probe.threads[-1] == loop_thread


def test_user_code_never_runs_on_the_event_loop():
    probe = Probe(inline_safe=False)
    loop_thread = calls(ThreadExecutor("m", probe), [np.zeros(1)] * 10)
    assert loop_thread not in probe.threads


def test_a_large_batch_of_a_fast_model_goes_to_a_thread():
    probe = Probe(inline_safe=True)
    small = [np.zeros(1)] * 10 + [np.full(2, 0.05)] * 5  # learn the cost per row: 0.05 ms
    big = np.full(1000, 0.01)  # 1000 rows: expected ~50 ms, far over the inline limit
    loop_thread = calls(ThreadExecutor("m", probe), [*small, big, big])
    assert probe.threads[-2] != loop_thread  # a batch bigger than any measured: never predicted short
    assert probe.threads[-1] != loop_thread  # measured now, and its cost per row says it is long


def test_a_model_that_only_ever_sees_full_batches_runs_inline_once_measured():
    """Under zero-delay batching a busy model may never see a call of one row: the cost of the batches it does
    see is what decides."""
    probe = Probe(inline_safe=True)
    loop_thread = calls(ThreadExecutor("m", probe), [np.zeros(32)] * 10)
    assert probe.threads[0] != loop_thread
    assert probe.threads[-1] == loop_thread


def test_a_smaller_batch_is_expected_to_cost_what_the_next_larger_one_measured():
    executor = ThreadExecutor("m", Probe(inline_safe=True))
    executor.cost.learn(1, 10_000)
    executor.cost.learn(32, 50_000)
    assert executor.cost.expected_ns(1) == 10_000
    assert executor.cost.expected_ns(2) == executor.cost.expected_ns(32) == 50_000
    assert executor.cost.expected_ns(33) == float("inf")


def test_one_slow_call_does_not_send_the_next_ones_to_a_thread():
    """A call descheduled by a busy machine is an outlier, not the model's cost; a model that stays slow still
    moves to a thread after a few calls. (Timings are fed in: measured ones would make the test depend on load.)"""
    executor = ThreadExecutor("m", Probe(inline_safe=True))
    for _ in range(20):
        executor.cost.learn(1, 20_000)  # 20 µs a call
    executor.cost.learn(1, 20_000_000)  # one call took 20 ms
    assert executor.cost.expected_ns(1) < INLINE_BELOW_NS
    for _ in range(30):
        executor.cost.learn(1, 5_000_000)  # the model now really takes 5 ms
    assert executor.cost.expected_ns(1) > INLINE_BELOW_NS


def test_model_exceptions_become_internal():
    class Failing(Probe):
        def predict(self, inputs):
            raise ValueError("no")

    with pytest.raises(InferError, match="model 'm' failed: ValueError: no") as info:
        calls(ThreadExecutor("m", Failing(inline_safe=True)), [np.zeros(1)])
    assert info.value.code is ErrorCode.INTERNAL


class Gate:
    """A model whose calls wait until the test opens the gate (input ``wait`` true), else answer at once."""

    signature = Signature((), ())

    def __init__(self, inline_safe: bool = False) -> None:
        self.inline_safe = inline_safe
        self.gate = threading.Event()
        self.closed = False

    def predict(self, inputs):
        if inputs["wait"].any():
            self.gate.wait()
        return {"y": inputs["wait"]}

    def close(self) -> None:
        self.closed = True


def run_once(executor: ThreadExecutor, wait: bool, rows: int = 1):
    return asyncio.run(executor.run({"wait": np.full(rows, wait)}))


def test_a_call_past_the_execution_timeout_answers_deadline_exceeded_and_the_model_refuses_until_it_returns():
    model = Gate()
    executor = ThreadExecutor("slow", model, timeout_s=0.05)
    with pytest.raises(InferError) as caught:
        run_once(executor, wait=True)
    assert caught.value.code is ErrorCode.DEADLINE_EXCEEDED
    assert "'slow'" in caught.value.message
    assert "execution timeout of 0.05 s" in caught.value.message
    assert not executor.ready
    assert "not taking requests" in executor.not_ready_reason
    with pytest.raises(InferError) as refused:
        run_once(executor, wait=False)
    assert refused.value.code is ErrorCode.UNAVAILABLE
    assert refused.value.message == executor.not_ready_reason
    model.gate.set()  # the call returns
    for _ in range(200):
        if executor.ready:
            break
        time.sleep(0.01)
    assert executor.ready
    assert executor.not_ready_reason == ""
    assert run_once(executor, wait=False)["y"].tolist() == [False]
    executor.close()


def test_a_model_whose_call_overran_never_runs_inline_again():
    model = Gate(inline_safe=True)
    executor = ThreadExecutor("m", model, timeout_s=0.05)
    for _ in range(3):
        run_once(executor, wait=False)
    assert executor.inline(1)  # measured: far under a hundredth of the limit
    with pytest.raises(InferError):
        run_once(executor, wait=True, rows=2)  # a size not measured yet: on a thread
    model.gate.set()
    for _ in range(200):
        if executor.ready:
            break
        time.sleep(0.01)
    run_once(executor, wait=False)
    assert not executor.inline(1)
    executor.close()


def test_with_a_timeout_only_calls_far_below_it_run_inline():
    executor = ThreadExecutor("m", Gate(inline_safe=True), timeout_s=0.001)  # a hundredth: 10 µs
    executor.cost.learn(1, 50_000)  # 50 µs: inline without a timeout, not with this one
    assert not executor.inline(1)
    assert ThreadExecutor("m", Gate(inline_safe=True)).cost.expected_ns(1) == float("inf")
    unlimited = ThreadExecutor("m", Gate(inline_safe=True))
    unlimited.cost.learn(1, 50_000)
    assert unlimited.inline(1)


def test_close_does_not_wait_for_a_call_that_never_returns():
    model = Gate()
    executor = ThreadExecutor("m", model, timeout_s=0.05)
    with pytest.raises(InferError):
        run_once(executor, wait=True)
    executor.close()  # returns after at most the execution timeout
    assert not model.closed  # the runtime is left open under the call still running
    model.gate.set()
