"""The plain V2 JSON form: what the one-pass plan reads, what it leaves to the general path, and that its answer is
byte for byte the general encoder's."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import orjson
import pytest

from inferd.calls import prepare_inputs, requested_outputs
from inferd.codecs import v2_binary
from inferd.codecs.v2_plain import PlainRequestPlan
from inferd.inference import InferenceResponse, ResponseOutput
from inferd.scheduling.scheduler import RunResult, batch_key
from inferd.signature import Signature, TensorSpec

SIG = Signature(
    (TensorSpec("x", "FP32", (-1, 3)), TensorSpec("n", "INT64", (-1,))),
    (TensorSpec("y", "FP32", (-1, 2)), TensorSpec("label", "BOOL", (-1,))),
)
PLAIN: dict[str, Any] = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [[1, 2, 3], [4, 5, 6]]},
                                    {"name": "n", "datatype": "INT64", "shape": [2], "data": [7, 8]}]}
MAX_ELEMENTS = 1000


def plan(max_batch_size: int = 8) -> PlainRequestPlan:
    made = PlainRequestPlan.for_signature(SIG, max_batch_size)
    assert made is not None
    return made


def bent(change: Any) -> dict[str, Any]:
    payload = copy.deepcopy(PLAIN)
    change(payload)
    return payload


def test_the_plain_form_is_read_into_the_arrays_the_general_path_makes():
    read = plan().read(copy.deepcopy(PLAIN), MAX_ELEMENTS)
    assert read is not None
    expected, rows = prepare_inputs(SIG, v2_binary.decode_payload(copy.deepcopy(PLAIN), None, "m").inputs)
    assert (read.rows, rows) == (2, 2)
    assert read.id is None
    assert read.outputs == (("y", "FP32", False), ("label", "BOOL", False))
    for name, array in expected.items():
        assert read.arrays[name].dtype == array.dtype
        np.testing.assert_array_equal(read.arrays[name], array)


def test_an_id_and_named_outputs_are_part_of_the_plain_form():
    read = plan().read({**copy.deepcopy(PLAIN), "id": "r1", "outputs": [{"name": "label"}, {"name": "y"}]},
                       MAX_ELEMENTS)
    assert read is not None
    assert read.id == "r1"
    assert read.outputs == (("label", "BOOL", False), ("y", "FP32", False))


@pytest.mark.parametrize("change", [
    pytest.param(lambda p: p.update(parameters={"priority": 1}), id="request parameters"),
    pytest.param(lambda p: p.update(parameters={"binary_data_output": 1}), id="binary_data_output not a flag"),
    pytest.param(lambda p: p.update(outputs=[{"name": "y", "parameters": {"binary_data": "yes"}}]),
                 id="binary_data not a flag"),
    pytest.param(lambda p: p.update(outputs=[{"name": "y", "parameters": {"classification": 2}}]),
                 id="other output parameters"),
    pytest.param(lambda p: p.update(outputs=[{"name": "y", "extra": 1}]), id="output with another key"),
    pytest.param(lambda p: p.update(outputs=["y"]), id="output not an object"),
    pytest.param(lambda p: p.update(outputs=[{"name": "nope"}]), id="unknown output"),
    pytest.param(lambda p: p.update(outputs=[{"name": "y"}, {"name": "y"}]), id="output twice"),
    pytest.param(lambda p: p.update(outputs=[]), id="empty outputs"),
    pytest.param(lambda p: p.update(id=7), id="id not a string"),
    pytest.param(lambda p: p.update(extra=1), id="unknown key"),
    pytest.param(lambda p: p["inputs"].pop(), id="missing input"),
    pytest.param(lambda p: p["inputs"].append(p["inputs"][0]), id="input twice and one too many"),
    pytest.param(lambda p: p["inputs"].__setitem__(1, dict(p["inputs"][0])), id="input twice"),
    pytest.param(lambda p: p["inputs"][0].update(parameters={"binary_data_size": 24}), id="binary input"),
    pytest.param(lambda p: p["inputs"][0].pop("data"), id="no data"),
    pytest.param(lambda p: p["inputs"][0].update(name="z"), id="unknown input"),
    pytest.param(lambda p: p["inputs"][0].update(datatype="FP64"), id="wrong datatype"),
    pytest.param(lambda p: p["inputs"][0].update(shape=[2, 4]), id="wrong fixed dimension"),
    pytest.param(lambda p: p["inputs"][0].update(shape=[6]), id="wrong rank"),
    pytest.param(lambda p: p["inputs"][0].update(shape=[-2, 3]), id="negative dimension"),
    pytest.param(lambda p: p["inputs"][0].update(shape=[2.0, 3]), id="float dimension"),
    pytest.param(lambda p: p["inputs"][0].update(shape=[True, 3]), id="bool dimension"),
    pytest.param(lambda p: p["inputs"][0].update(shape=[3, 3]), id="too few elements"),
    pytest.param(lambda p: p["inputs"][0].update(data=[[1, 2, 3], [4, None, 6]]), id="null in data"),
    pytest.param(lambda p: p["inputs"][0].update(data=[[1, 2, 3], [4, "five", 6]]), id="string in data"),
    pytest.param(lambda p: p["inputs"][0].update(data=[[1, 2, 3], [4, "NaN", 6]]), id="the string NaN"),
    pytest.param(lambda p: p["inputs"][0].update(data=["Infinity", 2, 3, 4, 5, 6]), id="the string Infinity"),
    pytest.param(lambda p: p["inputs"][0].update(data=["1", "2", "3", "4", "5", "6"]), id="numbers as strings"),
    pytest.param(lambda p: p["inputs"][1].update(data=["7", 8]), id="an integer as a string"),
    pytest.param(lambda p: p["inputs"][0].update(data=[[1, 2, 3], [4, 1e39, 6]]), id="over FP32's range"),
    pytest.param(lambda p: p["inputs"][0].update(data=[1, 2, 3, 4, None, 6]), id="null in flat data"),
    pytest.param(lambda p: p["inputs"][0].update(data=[1, 2, 3, 4, 1e39, 6]), id="over FP32's range, flat"),
    pytest.param(lambda p: p["inputs"][0].update(data=[1, 2, 3, 4, -1e39, 6]), id="under FP32's range, flat"),
    pytest.param(lambda p: p["inputs"][0].update(data=[[1, 2, 3], [4, 5]]), id="ragged data"),
    pytest.param(lambda p: p["inputs"][1].update(shape=[3], data=[7, 8, 9]), id="inputs disagree on rows"),
    pytest.param(lambda p: p["inputs"][1].update(data=[7, 2**70]), id="over INT64's range"),
    pytest.param(lambda p: p["inputs"][0].update(shape=[0, 3], data=[]) or p["inputs"][1].update(shape=[0], data=[]),
                 id="no rows"),
])
def test_anything_else_is_left_to_the_general_path(change):
    assert plan().read(bent(change), MAX_ELEMENTS) is None


def test_rows_over_the_batch_limit_and_elements_over_the_tensor_limit_are_left_to_the_general_path():
    assert plan(max_batch_size=1).read(copy.deepcopy(PLAIN), MAX_ELEMENTS) is None
    assert plan().read(copy.deepcopy(PLAIN), 5) is None  # x has 6 elements
    assert plan().read(copy.deepcopy(PLAIN), 6) is not None


def test_a_payload_that_is_not_an_object_is_left_to_the_general_path():
    for payload in ([], "x", None, 3, {"inputs": {}}):
        assert plan().read(payload, MAX_ELEMENTS) is None


@pytest.mark.parametrize("datatype", ["BYTES", "FP16", "BF16"])
def test_signatures_with_tensors_json_carries_otherwise_have_no_plan(datatype):
    as_input = Signature((TensorSpec("x", datatype, (-1,)),), (TensorSpec("y", "FP32", (-1,)),))
    as_output = Signature((TensorSpec("x", "FP32", (-1,)),), (TensorSpec("y", datatype, (-1,)),))
    assert PlainRequestPlan.for_signature(as_input, 8) is None
    assert PlainRequestPlan.for_signature(as_output, 8) is None


def test_an_unbatched_signature_reads_as_one_row():
    fixed = Signature((TensorSpec("x", "FP64", (2, -1)),), (TensorSpec("y", "FP64", (2,)),))
    made = PlainRequestPlan.for_signature(fixed, 0)
    assert made is not None
    read = made.read({"inputs": [{"name": "x", "datatype": "FP64", "shape": [2, 1], "data": [1.5, 2.5]}]}, 10)
    assert read is not None
    assert read.rows == 1
    assert read.arrays["x"].shape == (2, 1)
    assert made.batch_key is None  # a free dimension after the first: the scheduler compares each request's shapes


def test_the_batch_key_is_what_the_scheduler_makes_of_the_arrays():
    read = plan().read(copy.deepcopy(PLAIN), MAX_ELEMENTS)
    assert read is not None
    assert plan().batch_key == batch_key(read.arrays)


@pytest.mark.parametrize("extra", [
    {}, {"id": "abc"}, {"id": None, "outputs": None, "parameters": {}}, {"outputs": [{"name": "label"}]},
    {"parameters": {"binary_data_output": True}},
    {"parameters": {"binary_data_output": True}, "outputs": [{"name": "label", "parameters": {"binary_data": False}},
                                                             {"name": "y"}]},
    {"outputs": [{"name": "y", "parameters": {"binary_data": True}}, {"name": "label", "parameters": {}}]},
])
def test_the_answer_is_the_general_paths_byte_for_byte(extra):
    payload = {**copy.deepcopy(PLAIN), **extra}
    read = plan().read(copy.deepcopy(payload), MAX_ELEMENTS)
    assert read is not None
    request = v2_binary.decode_payload(copy.deepcopy(payload), None, "m")
    assert read.id == request.id
    outputs = {"y": np.array([[0.1, 0.2], [1 / 3, 2.5e-8]], dtype=np.float32), "label": np.array([True, False])}
    wanted = list(requested_outputs(SIG, request.outputs))
    assert [name for name, _, _ in read.outputs] == wanted
    general = InferenceResponse("m", "3", [ResponseOutput(name, SIG.output_datatypes[name], list(outputs[name].shape),
                                                          outputs[name]) for name in wanted], request.id)
    expected = v2_binary.encode_response(general, v2_binary.binary_outputs(request, wanted))
    assert PlainRequestPlan.encode("m", "3", read, RunResult(outputs, 0, 0, 2)) == expected  # it ran alone
    # the same rows, cut from a batch of several callers (the lists made once for the batch)
    batch = {name: np.concatenate([array[:1], array, array[::-1]]) for name, array in outputs.items()}
    shared: dict[str, list[Any]] = {}
    assert PlainRequestPlan.encode("m", "3", read, RunResult(batch, 0, 0, 5, False, 1, 3, shared)) == expected


def test_one_row_callers_of_a_batch_each_get_their_row_cut_from_the_batchs_lists():
    batch = {"y": np.array([[0.1, 0.2], [1 / 3, 2.5e-8], [-1.0, 7.0]], dtype=np.float32),
             "label": np.array([True, False, True])}
    shared: dict[str, list[Any]] = {}
    for row in range(3):
        one = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]},
                          {"name": "n", "datatype": "INT64", "shape": [1], "data": [4]}]}
        read = plan().read(one, MAX_ELEMENTS)
        assert read is not None
        own = {name: array[row:row + 1] for name, array in batch.items()}
        general = InferenceResponse("m", "3", [ResponseOutput(name, SIG.output_datatypes[name], list(own[name].shape),
                                                              own[name]) for name in ("y", "label")])
        expected = v2_binary.encode_response(general, set())
        answer = RunResult(batch, 0, 0, 3, row == 0, row, row + 1, shared)
        assert PlainRequestPlan.encode("m", "3", read, answer) == expected
    assert set(shared) == {"y", "label"}  # listed once, for every caller


RAW_X = np.arange(6, dtype="<f4").reshape(2, 3)
RAW_N = np.array([7, -8], dtype="<i8")
BINARY: dict[str, Any] = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": 24}},
               {"name": "n", "datatype": "INT64", "shape": [2], "parameters": {"binary_data_size": 16}}],
    "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
TAIL = RAW_X.tobytes() + RAW_N.tobytes()


def test_binary_inputs_are_read_as_the_general_path_reads_them():
    read = plan().read(copy.deepcopy(BINARY), MAX_ELEMENTS, memoryview(TAIL))
    assert read is not None
    assert read.outputs == (("y", "FP32", True),)
    expected, rows = prepare_inputs(SIG, v2_binary.decode_request(orjson.dumps(BINARY) + TAIL,
                                                                  str(len(orjson.dumps(BINARY))), "m").inputs)
    assert read.rows == rows == 2
    for name, array in expected.items():
        assert read.arrays[name].dtype == array.dtype
        np.testing.assert_array_equal(read.arrays[name], array)


@pytest.mark.parametrize(("change", "tail"), [
    pytest.param(lambda p: None, TAIL + b"\0", id="bytes left over"),
    pytest.param(lambda p: None, TAIL[:-1], id="bytes missing"),
    pytest.param(lambda p: p["inputs"][0]["parameters"].update(binary_data_size=20), TAIL, id="size not the shape's"),
    pytest.param(lambda p: p["inputs"][0]["parameters"].update(binary_data_size=True), TAIL, id="size a boolean"),
    pytest.param(lambda p: p["inputs"][0]["parameters"].update(other=1), TAIL, id="another input parameter"),
    pytest.param(lambda p: p["inputs"][0].update(data=[1, 2, 3, 4, 5, 6]), TAIL, id="data and binary data"),
    pytest.param(lambda p: p["inputs"][1].pop("parameters") or p["inputs"][1].update(data=[7, -8]), TAIL[:24],
                 id="JSON and binary inputs mixed"),
])
def test_anything_else_in_binary_requests_is_left_to_the_general_path(change, tail):
    payload = copy.deepcopy(BINARY)
    change(payload)
    assert plan().read(payload, MAX_ELEMENTS, memoryview(tail)) is None
