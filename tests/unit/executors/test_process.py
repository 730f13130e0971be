"""The process executor: workers that load the model themselves, tensors through shared memory, and a
supervisor that replaces workers that die (kill -9, segfault) and backs off when they cannot load."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from multiprocessing import resource_tracker
from pathlib import Path

import numpy as np
import pytest

from fakes import ADDER, FAILING, SHOUT, write_model
from inferd.errors import ErrorCode, InferError
from inferd.executors.limits import WorkerLimits, resident_mb
from inferd.executors.process import ProcessExecutor
from inferd.executors.shm import PREFIX, Segment, attach
from inferd.runtimes.registry import RUNTIMES, load_runtime
from inferd.tensors import DATATYPES, numpy_dtype

ECHO_ALL = f"""
DATATYPES = {list(DATATYPES)!r}

class Model:
    inputs = [{{"name": d.lower(), "datatype": d, "shape": [-1, -1]}} for d in DATATYPES]
    outputs = [{{"name": "out_" + d.lower(), "datatype": d, "shape": [-1, -1]}} for d in DATATYPES]

    def predict(self, inputs):
        return {{"out_" + name: array for name, array in inputs.items()}}
"""

SLOW = """
import time

class Model:
    inputs = [{"name": "seconds", "datatype": "FP64", "shape": [1]}]
    outputs = [{"name": "slept", "datatype": "FP64", "shape": [1]}]

    def predict(self, inputs):
        time.sleep(float(inputs["seconds"][0]))
        return {"slept": inputs["seconds"]}
"""

CRASHY = """
import ctypes
import resource

class Model:
    inputs = [{"name": "x", "datatype": "INT64", "shape": [-1]}]
    outputs = [{"name": "y", "datatype": "INT64", "shape": [-1]}]

    def predict(self, inputs):
        if (inputs["x"] < 0).any():
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file for this crash
            ctypes.string_at(0)  # segfault
        return {"y": inputs["x"] + 1}
"""

NO_WEIGHTS = """
class Model:
    inputs = [{"name": "x", "datatype": "INT64", "shape": [-1]}]
    outputs = [{"name": "y", "datatype": "INT64", "shape": [-1]}]

    def load(self):
        raise RuntimeError("no weights here")

    def predict(self, inputs):
        return {"y": inputs["x"]}
"""

EXITS = NO_WEIGHTS.replace('raise RuntimeError("no weights here")', "import os; os._exit(3)")


def start(root: Path, name: str, source: str, count: int = 1, limits: WorkerLimits | None = None) -> ProcessExecutor:
    folder = write_model(root, name, source)
    return ProcessExecutor.start(name, 1, RUNTIMES["python"], folder / "1" / "model.py", folder, {}, None, count,
                                 limits)


@pytest.fixture
def executors() -> Iterator[list[ProcessExecutor]]:
    """Executors a test starts; closed even when the test fails."""
    started: list[ProcessExecutor] = []
    yield started
    for executor in started:
        executor.close()


def run(executor: ProcessExecutor, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return asyncio.run(executor.run(inputs))


def wait_ready(executor: ProcessExecutor, within: float) -> float:
    began = time.monotonic()
    while not executor.ready:
        assert time.monotonic() - began < within, f"not ready again within {within} s"
        time.sleep(0.02)
    return time.monotonic() - began


def our_segments() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith(f"{PREFIX}{os.getpid()}-")}


def internal_error(excinfo: pytest.ExceptionInfo[InferError]) -> str:
    assert excinfo.value.code is ErrorCode.INTERNAL
    return excinfo.value.message


def test_two_workers_answer_many_concurrent_runs(tmp_path, executors):
    executors.append(adder := start(tmp_path, "adder", ADDER, count=2))
    assert adder.instances == 2
    assert len(set(adder.pids)) == 2
    assert adder.ready
    assert adder.restarts == 0
    assert adder.signature.input_names() == ["a", "b"]
    assert adder.signature.output_names() == ["sum", "total"]
    rng = np.random.default_rng(0)
    batches = [(rng.random((i % 5 + 1, 3), dtype=np.float32), rng.random((i % 5 + 1, 3), dtype=np.float32))
               for i in range(50)]

    async def all_at_once() -> list[dict[str, np.ndarray]]:
        return await asyncio.gather(*(adder.run({"a": a, "b": b}) for a, b in batches))

    for (a, b), out in zip(batches, asyncio.run(all_at_once()), strict=True):
        np.testing.assert_array_equal(out["sum"], a + b)
        assert out["sum"].dtype == np.float32
        assert out["total"].dtype == np.float64
        np.testing.assert_array_equal(out["total"], (a + b).sum(axis=1).astype(np.float64))


def test_every_datatype_and_large_tensors_round_trip_exactly(tmp_path, executors):
    executors.append(echo := start(tmp_path, "echo", ECHO_ALL))
    rng = np.random.default_rng(1)
    inputs = {}
    for datatype in DATATYPES:
        if datatype == "BYTES":
            array = np.empty((2, 3), dtype=object)
            array.ravel()[:] = [b"", b"a", "é".encode(), b"\x00\xff", b"x" * 1000, b"last"]
        else:
            array = (rng.random((2, 3)) * 100).astype(numpy_dtype(datatype))
        inputs[datatype.lower()] = array
    inputs["fp32"] = np.empty((0, 7), dtype=np.float32)  # empty tensors too
    before = our_segments()
    out = run(echo, inputs)
    for name, array in inputs.items():
        echoed = out["out_" + name]
        assert (echoed.dtype, echoed.shape) == (array.dtype, array.shape), name
        if name == "bytes":
            assert echoed.tolist() == array.tolist()
        else:
            assert echoed.tobytes() == array.tobytes(), name

    large = dict(inputs, fp64=rng.random((1024, 1024)))  # 8 MB each way: both segments grow
    out = run(echo, large)
    np.testing.assert_array_equal(out["out_fp64"], large["fp64"])
    assert our_segments() != before, "both segments grew"
    assert len(our_segments()) == 2, "the outgrown segments are unlinked"
    np.testing.assert_array_equal(run(echo, inputs)["out_int64"], inputs["int64"])


def test_bytes_round_trip(tmp_path, executors):
    executors.append(shout := start(tmp_path, "shout", SHOUT))
    text = np.array([b"hello", b"", "gr\u00fc\u00df".encode()], dtype=object)
    out = run(shout, {"text": text})
    assert out["upper"].tolist() == [b"HELLO", b"", "GR\u00dc\u00df".upper().encode()]


def test_a_model_error_fails_the_request_and_the_worker_serves_on(tmp_path, executors):
    executors.append(failing := start(tmp_path, "failing", FAILING))
    pids = failing.pids
    with pytest.raises(InferError) as excinfo:
        run(failing, {"x": np.array([1, -1])})
    assert internal_error(excinfo) == "model 'failing' failed: ValueError: negative values are not allowed"
    np.testing.assert_array_equal(run(failing, {"x": np.array([1, 2])})["y"], [2, 4])
    assert failing.pids == pids
    assert failing.restarts == 0
    assert failing.ready


def test_kill_9_fails_the_running_request_and_the_worker_is_replaced(tmp_path, executors):
    executors.append(slow := start(tmp_path, "slow", SLOW))
    [pid] = slow.pids

    async def killed_mid_request() -> None:
        request = asyncio.ensure_future(slow.run({"seconds": np.array([5.0])}))
        await asyncio.sleep(0.3)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(InferError) as excinfo:
            await asyncio.wait_for(request, 2)
        assert internal_error(excinfo) == (
            f"worker process {pid} of model 'slow' died (signal 9, SIGKILL) while running the request"
        )
        assert not slow.ready

    asyncio.run(killed_mid_request())
    wait_ready(slow, 30.0)  # replaced; how fast depends on the machine, not on this code
    assert slow.restarts == 1
    assert slow.pids != [pid]
    assert run(slow, {"seconds": np.array([0.0])})["slept"].tolist() == [0.0]


def test_a_call_past_the_execution_timeout_kills_the_worker_and_a_new_one_serves(tmp_path, executors):
    executors.append(slow := start(tmp_path, "slow", SLOW, limits=WorkerLimits(timeout_s=0.3)))
    [pid] = slow.pids
    with pytest.raises(InferError) as excinfo:
        run(slow, {"seconds": np.array([1e6])})
    assert excinfo.value.code is ErrorCode.DEADLINE_EXCEEDED
    assert excinfo.value.message == (f"model 'slow' did not answer within its execution timeout of 0.3 s; its worker "
                                     f"process {pid} was killed and is being replaced")
    wait_ready(slow, 10.0)
    assert slow.pids != [pid]
    assert run(slow, {"seconds": np.array([0.0])})["slept"].tolist() == [0.0]


def test_a_worker_is_replaced_after_max_requests(tmp_path, executors):
    executors.append(adder := start(tmp_path, "adder", ADDER, limits=WorkerLimits(max_requests=2)))
    inputs = {"a": np.ones((1, 3), np.float32), "b": np.ones((1, 3), np.float32)}
    [first] = adder.pids
    run(adder, inputs)
    assert adder.pids == [first]
    run(adder, inputs)  # its second call: then it is replaced
    wait_ready(adder, 10.0)
    assert adder.pids != [first]
    assert run(adder, inputs)["total"].tolist() == [6.0]
    assert adder.restarts == 1


def test_recycling_reasons():
    assert WorkerLimits().recycle_reason(10**6, os.getpid()) == ""
    assert WorkerLimits(max_requests=3).recycle_reason(2, os.getpid()) == ""
    assert "served 3 calls" in WorkerLimits(max_requests=3).recycle_reason(3, os.getpid())
    assert resident_mb(os.getpid()) > 1
    assert "over max_rss_mb 1" in WorkerLimits(max_rss_mb=1).recycle_reason(1, os.getpid())
    assert WorkerLimits(max_rss_mb=1).recycle_reason(1, 2**22 + 12345) == ""  # no such process: nothing to measure


def test_a_caller_giving_up_leaves_the_worker_serving(tmp_path, executors):
    executors.append(slow := start(tmp_path, "slow", SLOW))
    pids = slow.pids

    async def impatient() -> dict[str, np.ndarray]:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(slow.run({"seconds": np.array([0.4])}), 0.1)
        return await slow.run({"seconds": np.array([0.0])})  # waits for the worker to finish the first

    assert asyncio.run(impatient())["slept"].tolist() == [0.0]
    assert slow.pids == pids
    assert slow.restarts == 0


def test_a_segfault_in_predict_is_survived(tmp_path, executors):
    executors.append(crashy := start(tmp_path, "crashy", CRASHY, count=2))
    pids = crashy.pids

    async def crash_then_serve() -> None:
        with pytest.raises(InferError) as excinfo:
            await crashy.run({"x": np.array([-1])})
        message = internal_error(excinfo)
        assert "of model 'crashy' died (signal 11, SIGSEGV) while running the request" in message
        assert not crashy.ready
        # the other worker serves while the crashed one is replaced
        assert (await crashy.run({"x": np.array([1])}))["y"].tolist() == [2]

    asyncio.run(crash_then_serve())
    wait_ready(crashy, 30.0)
    assert crashy.restarts == 1
    assert len(set(crashy.pids) & set(pids)) == 1
    assert run(crashy, {"x": np.array([41])})["y"].tolist() == [42]


@pytest.mark.parametrize(("source", "message"), [
    (NO_WEIGHTS, "RuntimeError: no weights here"),
    (EXITS, r"worker process \d+ of model 'broken' died \(exit code 3\) while loading"),
])
def test_a_load_failure_stops_start(tmp_path, source, message):
    children, segments = set(multiprocessing.active_children()), our_segments()
    with pytest.raises(ValueError, match=message):
        start(tmp_path, "broken", source, count=2)
    assert set(multiprocessing.active_children()) <= children
    assert our_segments() == segments


def test_a_worker_that_cannot_load_again_is_retried_with_back_off(tmp_path, executors):
    executors.append(adder := start(tmp_path, "adder", ADDER))
    artifact = tmp_path / "adder" / "1" / "model.py"
    hidden = artifact.rename(artifact.with_name("hidden.py"))
    os.kill(adder.pids[0], signal.SIGKILL)
    began = time.monotonic()
    while not (adder.restarts >= 1 and "model.py" in (adder.last_error or "")):
        assert time.monotonic() - began < 30, "the dead worker was never replaced"
        time.sleep(0.05)
    first = adder.restarts
    time.sleep(2.0)
    assert not adder.ready
    assert adder.restarts - first <= 3, "replacements are spaced out, not started in a loop"
    hidden.rename(artifact)
    wait_ready(adder, 30.0)
    one = np.ones((1, 3), dtype=np.float32)
    assert run(adder, {"a": one, "b": one})["sum"].tolist() == [[2.0, 2.0, 2.0]]


def test_close_stops_every_worker_and_unlinks_every_segment(tmp_path):
    segments = our_segments()
    adder = start(tmp_path, "adder", ADDER, count=2)
    pids = adder.pids
    big = np.ones((300_000, 3), dtype=np.float32)
    run(adder, {"a": big, "b": big})
    assert len(our_segments() - segments) == 4
    adder.close()
    adder.close()
    assert not adder.ready
    assert adder.pids == []
    assert not {p.pid for p in multiprocessing.active_children()} & set(pids)
    for pid in pids:
        with pytest.raises(ChildProcessError):  # already reaped: no zombies
            os.waitpid(pid, os.WNOHANG)
    assert our_segments() == segments
    with pytest.raises(InferError) as excinfo:
        run(adder, {"a": big, "b": big})
    assert excinfo.value.code is ErrorCode.UNAVAILABLE


def test_an_onnx_model_answers_as_it_does_in_process(tmp_path, executors):
    from onnx import TensorProto, helper

    rng = np.random.default_rng(2)
    weights, bias = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
         helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0)],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 3]),
         helper.make_tensor_value_info("label", TensorProto.INT64, [None])],
        [helper.make_tensor("w", TensorProto.FLOAT, [4, 3], weights.ravel().tolist()),
         helper.make_tensor("b", TensorProto.FLOAT, [3], bias.tolist())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    artifact = tmp_path / "tiny" / "1" / "model.onnx"
    artifact.parent.mkdir(parents=True)
    artifact.write_bytes(model.SerializeToString())
    tiny = ProcessExecutor.start("tiny", 1, RUNTIMES["onnx"], artifact, artifact.parent.parent, {}, None, 1)
    executors.append(tiny)
    in_process = load_runtime(RUNTIMES["onnx"], artifact, artifact.parent.parent, {}, None)
    assert tiny.signature == in_process.signature
    x = rng.standard_normal((16, 4)).astype(np.float32)
    out, expected = run(tiny, {"x": x}), in_process.predict({"x": x})
    np.testing.assert_array_equal(out["label"], expected["label"])
    np.testing.assert_allclose(out["probabilities"], expected["probabilities"], rtol=1e-6)


def test_a_worker_maps_a_segment_without_registering_it_with_the_resource_tracker(monkeypatch):
    registered: list[tuple[str, str]] = []
    segment = Segment()
    def register(name: str, rtype: str) -> None:
        registered.append((name, rtype))

    monkeypatch.setattr(resource_tracker, "register", register)
    mapped = attach(segment.name)
    mapped.buf[:3] = b"abc"
    assert bytes(segment.buf[:3]) == b"abc"
    mapped.close()
    assert registered == []  # else the tracker would unlink it, or warn of a leak, when the worker exits
    assert resource_tracker.register is register  # put back after the attach
    segment.close()
    segment.close()
    assert segment.name not in our_segments()


def test_no_room_in_shared_memory_fails_the_request_not_the_server(tmp_path, executors, monkeypatch):
    executors.append(adder := start(tmp_path, "adder", ADDER))
    real_fallocate = os.posix_fallocate

    def small_dev_shm(fd: int, offset: int, length: int) -> None:
        if length > 1 << 20:
            raise OSError(28, "No space left on device")
        real_fallocate(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", small_dev_shm)
    segments = our_segments()
    big = np.ones((200_000, 3), dtype=np.float32)  # 2.4 MB
    with pytest.raises(InferError) as excinfo:
        run(adder, {"a": big, "b": big})
    assert "shared memory has no room for" in internal_error(excinfo)
    assert our_segments() == segments
    one = np.ones((1, 3), dtype=np.float32)
    assert run(adder, {"a": one, "b": one})["sum"].tolist() == [[2.0, 2.0, 2.0]]
    assert adder.restarts == 0
