"""The DataPlane end to end over a real repository of python models: every validation error, model
failures, and that the plane keeps serving after each."""

import asyncio

import numpy as np
import orjson
import pytest

from fakes import write_model
from inferd.calls import parse_version
from inferd.codecs.v2_body import V2Body
from inferd.dataplane import DataPlane
from inferd.errors import ErrorCode, InferError
from inferd.inference import InferenceRequest, RequestInput, RequestOutput
from inferd.repository import ModelRepository

A = RequestInput("a", "FP32", [2, 3], [1, 2, 3, 4, 5, 6])
B = RequestInput("b", "FP32", [2, 3], [[1, 1, 1], [2, 2, 2]])


def infer(plane: DataPlane, request: InferenceRequest):
    return asyncio.run(plane.infer(request))


def expect_error(plane: DataPlane, request: InferenceRequest, code: ErrorCode, message: str) -> InferError:
    with pytest.raises(InferError, match=message) as info:
        infer(plane, request)
    assert info.value.code is code
    return info.value


def test_infer_returns_every_output_in_signature_order(dataplane):
    response = infer(dataplane, InferenceRequest("adder", [A, B], id="req-1"))
    assert response.id == "req-1"
    assert response.model_version == "1"
    assert [o.name for o in response.outputs] == ["sum", "total"]
    out = response.outputs[0]
    assert (out.datatype, out.shape) == ("FP32", [2, 3])
    np.testing.assert_array_equal(out.data, [[2, 3, 4], [6, 7, 8]])
    assert response.outputs[1].data.tolist() == [9.0, 21.0]


def test_requested_outputs_are_honoured(dataplane):
    response = infer(dataplane, InferenceRequest("adder", [A, B], outputs=[RequestOutput("total")]))
    assert [o.name for o in response.outputs] == ["total"]
    expect_error(dataplane, InferenceRequest("adder", [A, B], outputs=[RequestOutput("mean")]),
                 ErrorCode.INVALID_ARGUMENT, "unknown output 'mean'; the model gives 'sum', 'total'")


def test_explicit_version(dataplane):
    assert infer(dataplane, InferenceRequest("adder", [A, B], model_version="1")).model_version == "1"
    expect_error(dataplane, InferenceRequest("adder", [A, B], model_version="2"), ErrorCode.NOT_FOUND,
                 "model 'adder' has no version 2")
    expect_error(dataplane, InferenceRequest("adder", [A, B], model_version="latest"),
                 ErrorCode.INVALID_ARGUMENT, "failed to get model version from specified version string")


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([A], "missing input 'b'; the model takes 'a', 'b'"),
        ([A, B, RequestInput("c", "FP32", [1], [1])], "unexpected input 'c'; the model takes 'a', 'b'"),
        ([A, RequestInput("b", "INT32", [2, 3], [1] * 6)], "input 'b': expected datatype FP32, got INT32"),
        ([A, RequestInput("b", "FP32", [6], [1] * 6)], r"input 'b': expected shape \[-1, 3\], got \[6\]"),
        ([A, RequestInput("b", "FP32", [2, 4], [1] * 8)], r"input 'b': expected shape \[-1, 3\], got \[2, 4\]"),
        ([A, RequestInput("b", "FP32", [2, 3], [1] * 5)], r"input 'b': shape \[2, 3\] needs 6 elements but the data"),
        ([A, RequestInput("b", "FP32", [1, 3], [1] * 3)], "inputs disagree on the batch size: 'a' has 2, 'b' has 1"),
        ([A, A, B], "input 'a' appears more than once"),
        ([A, RequestInput("b", "FP32", [2, 3], ["x"] * 6)], "input 'b': FP32 data must be JSON numbers, got the string 'x'"),
    ],
)
def test_invalid_requests_name_the_problem(dataplane, inputs, message):
    expect_error(dataplane, InferenceRequest("adder", inputs), ErrorCode.INVALID_ARGUMENT, message)
    assert infer(dataplane, InferenceRequest("adder", [A, B])).outputs  # still serving


def test_unknown_model(dataplane):
    expect_error(dataplane, InferenceRequest("nope", [A]), ErrorCode.NOT_FOUND, "Request for unknown model: 'nope' is not found")


def test_model_that_raises_gives_internal_and_the_next_request_works(dataplane):
    bad = InferenceRequest("failing", [RequestInput("x", "INT64", [2], [1, -1])])
    error = expect_error(dataplane, bad, ErrorCode.INTERNAL,
                         "model 'failing' failed: ValueError: negative values are not allowed")
    assert "Traceback" not in error.message
    good = infer(dataplane, InferenceRequest("failing", [RequestInput("x", "INT64", [2], [1, 2])]))
    assert good.outputs[0].data.tolist() == [2, 4]


def test_model_output_with_the_wrong_length_is_internal(dataplane):
    request = InferenceRequest("failing", [RequestInput("x", "INT64", [2], [7, 1])])
    expect_error(dataplane, request, ErrorCode.INTERNAL, "model output 'y' has 3 rows for a batch of 2")


def test_metadata_ready_and_index(dataplane):
    assert dataplane.live()
    assert dataplane.ready()
    meta = dataplane.model_metadata("adder")
    assert meta.versions == ["1"]
    assert meta.platform == "python"
    assert meta.inputs[0] == {"name": "a", "datatype": "FP32", "shape": [-1, 3]}
    assert dataplane.model_ready("adder")
    assert dataplane.model_ready("adder", "1")
    with pytest.raises(InferError) as info:
        dataplane.model_ready("ghost")
    assert info.value.code is ErrorCode.NOT_FOUND
    server = dataplane.server_metadata()
    assert server.name == "inferd"
    assert server.version
    assert [(e.name, e.version, e.state) for e in dataplane.repository_index()] == [
        ("adder", "1", "READY"), ("failing", "1", "READY")]


def test_unload_then_load_through_the_plane(dataplane):
    asyncio.run(dataplane.unload("adder"))
    assert not dataplane.model_ready("adder")
    assert not dataplane.ready()
    expect_error(dataplane, InferenceRequest("adder", [A, B]), ErrorCode.UNAVAILABLE, "model 'adder' is not ready")
    assert ("adder", "1", "UNLOADED") in [(e.name, e.version, e.state) for e in dataplane.repository_index()]
    asyncio.run(dataplane.load("adder"))
    assert dataplane.ready()
    assert infer(dataplane, InferenceRequest("adder", [A, B])).outputs


def test_strict_readiness_reflects_a_broken_model(python_repo):
    (python_repo / "broken").mkdir()
    strict = DataPlane(ModelRepository(python_repo))
    assert not strict.ready()  # before start
    asyncio.run(strict.start())
    assert not strict.ready()
    lenient = DataPlane(ModelRepository(python_repo), strict_readiness=False)
    asyncio.run(lenient.start())
    assert lenient.ready()
    index = {e.name: e for e in lenient.repository_index()}
    assert index["broken"].state == "UNAVAILABLE"
    assert "no version folders" in index["broken"].reason
    assert [e.name for e in lenient.repository_index(ready_only=True)] == ["adder", "failing"]
    strict.close()
    lenient.close()


def test_models_added_on_disk_appear_in_the_index_before_loading(python_repo):
    plane = DataPlane(ModelRepository(python_repo))
    assert {(e.name, e.state) for e in plane.repository_index()} == {("adder", "UNLOADED"), ("failing", "UNLOADED")}
    plane.close()


def test_concurrent_requests_get_their_own_answers(dataplane):
    async def many():
        requests = [
            InferenceRequest("adder", [RequestInput("a", "FP32", [1, 3], [i, i, i]), RequestInput("b", "FP32", [1, 3], [1, 1, 1])], id=str(i))
            for i in range(50)
        ]
        return await asyncio.gather(*(dataplane.infer(r) for r in requests))

    for response in asyncio.run(many()):
        i = int(response.id)
        assert response.outputs[1].data.tolist() == [3.0 * i + 3]


def test_statistics_count_successes_failures_and_batches(dataplane):
    infer(dataplane, InferenceRequest("adder", [A, B]))
    infer(dataplane, InferenceRequest("adder", [A, B]))
    with pytest.raises(InferError):
        infer(dataplane, InferenceRequest("adder", [A]))
    (stats,) = dataplane.statistics("adder")
    body = stats.to_dict()
    assert (body["name"], body["version"]) == ("adder", "1")
    assert body["inference_count"] == 4  # two requests of two rows
    assert body["execution_count"] == 2
    assert body["inference_stats"]["success"]["count"] == 2
    assert body["inference_stats"]["fail"]["count"] == 1
    assert body["inference_stats"]["compute_infer"]["ns"] > 0
    assert [b["batch_size"] for b in body["batch_stats"]] == [2]
    assert {s.name for s in dataplane.statistics()} == {"adder", "failing"}
    assert dataplane.statistics("adder", "1")[0] is stats
    with pytest.raises(InferError):
        dataplane.statistics("ghost")


def test_model_config_leaves_out_the_batch_dimension(dataplane):
    config = dataplane.model_config("adder")
    assert config.max_batch_size == 4096
    assert [(s.name, s.datatype, s.dims, s.reshape) for s in config.inputs] == [
        ("a", "FP32", (3,), None), ("b", "FP32", (3,), None)]
    assert config.outputs[1].dims == ()


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_a_one_value_per_row_input_is_stated_and_taken_as_triton_does(python_repo, kind):
    """'failing' takes x INT64 [-1]: Triton states that as dims [1] reshaped to [], and its clients
    (perf_analyzer) send [n, 1], which the model gets as the [n] it declares."""
    (python_repo / "failing" / "model.toml").write_text(f'[instances]\nkind = "{kind}"\n')
    plane = DataPlane(ModelRepository(python_repo))
    asyncio.run(plane.start())
    try:
        (x,) = plane.model_config("failing").inputs
        assert (x.dims, x.reshape) == ((1,), ())
        assert plane.model_config("failing").outputs[0].dims == ()
        assert plane.model_metadata("failing").inputs == [{"name": "x", "datatype": "INT64", "shape": [-1, 1]}]
        for shape, data in (([3, 1], [[1], [2], [3]]), ([3], [1, 2, 3])):
            (y,) = infer(plane, InferenceRequest("failing", [RequestInput("x", "INT64", shape, data)])).outputs
            assert (y.shape, y.data.tolist()) == ([3], [2, 4, 6])
        expect_error(plane, InferenceRequest("failing", [RequestInput("x", "INT64", [3, 2], [1] * 6)]),
                     ErrorCode.INVALID_ARGUMENT, r"expected shape \[-1\] \(or \[-1, 1\]\), got \[3, 2\]")
    finally:
        plane.close()


def test_max_batch_size_limits_one_request(python_repo):
    (python_repo / "adder" / "model.toml").write_text("max_batch_size = 1\n")
    plane = DataPlane(ModelRepository(python_repo))
    asyncio.run(plane.start())
    assert plane.model_config("adder").max_batch_size == 1
    expect_error(plane, InferenceRequest("adder", [A, B]), ErrorCode.INVALID_ARGUMENT,
                 "a batch of 2 exceeds the model's max_batch_size of 1")
    plane.close()


def test_a_failed_load_is_an_error_with_the_reason(python_repo):
    plane = DataPlane(ModelRepository(python_repo))
    (python_repo / "adder" / "model.toml").write_text("speed = 1\n")
    with pytest.raises(InferError, match="failed to load model 'adder': .*key 'speed': unknown key") as info:
        asyncio.run(plane.load("adder"))
    assert info.value.code is ErrorCode.FAILED_PRECONDITION
    plane.close()


def test_with_batching_on_a_bad_request_fails_alone_and_the_rest_are_merged(python_repo):
    (python_repo / "adder" / "model.toml").write_text("[batching]\nenabled = true\nmax_queue_delay_us = 20000\n")
    plane = DataPlane(ModelRepository(python_repo))
    asyncio.run(plane.start())

    def request(i: int, good: bool = True) -> InferenceRequest:
        width = 3 if good else 4
        return InferenceRequest("adder", [RequestInput("a", "FP32", [1, width], [i] * width),
                                          RequestInput("b", "FP32", [1, width], [1] * width)], id=str(i))

    async def main():
        return await asyncio.gather(*(plane.infer(request(i, good=i != 5)) for i in range(10)),
                                    return_exceptions=True)

    results = asyncio.run(main())
    assert isinstance(results[5], InferError)
    assert "expected shape [-1, 3], got [1, 4]" in results[5].message
    for i, response in enumerate(results):
        if i != 5:
            assert response.outputs[1].data.tolist() == [3.0 * i + 3]
    body = plane.statistics("adder")[0].to_dict()
    assert body["inference_count"] == 9
    assert body["execution_count"] < 9  # merged: fewer model runs than requests
    assert max(b["batch_size"] for b in body["batch_stats"]) > 1
    assert sum(b["batch_size"] * b["compute_infer"]["count"] for b in body["batch_stats"]) == 9
    plane.close()


@pytest.mark.parametrize("version", ["²", "٣", "-1", "0", "1.0", " 1"])
def test_a_version_that_is_not_a_plain_positive_integer_is_invalid(version):
    """"²".isdigit() is true in Python and int("²") raises: found by the schema fuzzer as a 500."""
    with pytest.raises(InferError) as caught:
        parse_version(version)
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT


GATED = """
import time
from pathlib import Path

import numpy as np

GATE, CALLS = Path({gate!r}), Path({calls!r})


class Model:
    inputs = [{{"name": "x", "datatype": "FP32", "shape": [-1, 1]}}]
    outputs = [{{"name": "y", "datatype": "FP32", "shape": [-1, 1]}}]

    def predict(self, inputs):
        with CALLS.open("a") as calls:
            calls.write(repr(inputs["x"].ravel().tolist()) + "\\n")
        while not GATE.exists():  # held until the test opens the gate
            time.sleep(0.005)
        return {{"y": inputs["x"] * 2}}
"""


def test_a_cancelled_plain_request_still_waiting_never_runs(repo_root, tmp_path):
    gate, calls = tmp_path / "gate", tmp_path / "calls.txt"
    write_model(repo_root, "gated", GATED.format(gate=str(gate), calls=str(calls)))
    plane = DataPlane(ModelRepository(repo_root))

    def plain(value: float) -> V2Body:
        body = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [value]}]})
        return V2Body(body, None, "gated", None)

    async def main():
        await plane.start()
        running = asyncio.ensure_future(plane.infer(plain(1.0)))
        while not calls.exists():  # the first request holds the model's one instance
            await asyncio.sleep(0.005)
        abandoned = asyncio.ensure_future(plane.infer(plain(2.0)))
        kept = asyncio.ensure_future(plane.infer(plain(3.0)))
        await asyncio.sleep(0.05)
        abandoned.cancel()
        gate.touch()
        first, last = await running, await kept
        with pytest.raises(asyncio.CancelledError):
            await abandoned
        return first, last

    try:
        first, last = asyncio.run(main())
    finally:
        plane.close()
    assert b'"data":[2.0]' in first[0]
    assert b'"data":[6.0]' in last[0]
    assert calls.read_text().splitlines() == ["[1.0]", "[3.0]"]  # the abandoned request never ran


def test_an_empty_batch_is_answered_without_the_model(dataplane):
    """Triton's answer to a batch of 0: each output with 0 rows and its declared trailing shape and datatype."""
    empty = [RequestInput(n, "FP32", [0, 3], []) for n in ("a", "b")]
    before = dataplane.statistics("adder")[0].execution_count
    response = infer(dataplane, InferenceRequest("adder", empty, outputs=[RequestOutput("total"), RequestOutput("sum")]))
    assert [(o.name, o.datatype, o.shape, o.data.dtype, o.data.shape) for o in response.outputs] == [
        ("total", "FP64", [0], np.dtype(np.float64), (0,)), ("sum", "FP32", [0, 3], np.dtype(np.float32), (0, 3))]
    assert dataplane.statistics("adder")[0].execution_count == before
    infer(dataplane, InferenceRequest("adder", [A, B]))  # and it still serves
