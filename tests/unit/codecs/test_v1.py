import numpy as np
import pytest

from inferd.calls import prepare_inputs
from inferd.codecs import v1
from inferd.errors import ErrorCode, InferError
from inferd.inference import InferenceResponse, ResponseOutput
from inferd.signature import Signature, TensorSpec
from inferd.tensors import as_bytes_array

ROWS = Signature((TensorSpec("x", "FP32", (-1, 3)),), (TensorSpec("y", "FP32", (-1,)),))
SCALARS = Signature((TensorSpec("n", "INT64", (-1,)),), (TensorSpec("y", "INT64", (-1,)),))
TEXT = Signature((TensorSpec("text", "BYTES", (-1,)),), (TensorSpec("upper", "BYTES", (-1,)),))
TWO = Signature(
    (TensorSpec("a", "FP32", (-1, 2)), TensorSpec("b", "BYTES", (-1,))),
    (TensorSpec("sum", "FP32", (-1, 2)), TensorSpec("label", "INT64", (-1,))),
)
IMAGE = Signature((TensorSpec("img", "FP32", (-1, 2, 2)),), (TensorSpec("y", "FP32", (-1,)),))
UNBATCHED = Signature((TensorSpec("m", "FP32", (2, 2)),), (TensorSpec("d", "FP32", (2, 2)),))
UNBATCHED_TWO = Signature(
    (TensorSpec("p", "FP32", (3,)), TensorSpec("q", "INT64", ())),
    (TensorSpec("r", "FP32", (3,)), TensorSpec("s", "FP64", ())),
)


def arrays(signature, request):
    found, _ = prepare_inputs(signature, request.inputs)
    return found


def check_invalid(match, call, *args):
    with pytest.raises(InferError, match=match) as info:
        call(*args)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


# -- instances ----------------------------------------------------------------------------------------------
def test_rows_of_the_only_input_stack_along_the_batch():
    request = v1.decode_request({"instances": [[1, 2, 3], [4, 5, 6]]}, "m", ROWS, "2")
    assert (request.model_name, request.model_version) == ("m", "2")
    (only,) = request.inputs
    assert (only.name, only.datatype, only.shape) == ("x", "FP32", [2, 3])
    x = arrays(ROWS, request)["x"]
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, [[1, 2, 3], [4, 5, 6]])


def test_scalar_rows_and_string_rows():
    request = v1.decode_request({"instances": [1, 2, 3]}, "m", SCALARS)
    assert request.inputs[0].shape == [3]
    np.testing.assert_array_equal(arrays(SCALARS, request)["n"], [1, 2, 3])
    text = v1.decode_request({"instances": ["hello, world", "ünï"]}, "m", TEXT)
    assert text.inputs[0].shape == [2]
    assert list(arrays(TEXT, text)["text"]) == [b"hello, world", "ünï".encode()]


def test_rows_of_higher_rank():
    request = v1.decode_request({"instances": [[[1, 2], [3, 4]]]}, "m", IMAGE)
    assert request.inputs[0].shape == [1, 2, 2]


def test_several_inputs_take_one_object_per_instance():
    body = {"instances": [{"a": [1, 2], "b": "x"}, {"b": "y", "a": [3, 4]}]}
    request = v1.decode_request(body, "m", TWO)
    found = arrays(TWO, request)
    np.testing.assert_array_equal(found["a"], [[1, 2], [3, 4]])
    assert list(found["b"]) == [b"x", b"y"]


def test_a_single_input_model_also_takes_named_instances():
    request = v1.decode_request({"instances": [{"x": [1, 2, 3]}, {"x": [4, 5, 6]}]}, "m", ROWS)
    assert request.inputs[0].shape == [2, 3]


def test_parameters_are_passed_on():
    request = v1.decode_request({"instances": [[1, 2, 3]], "parameters": {"top_k": 2}}, "m", ROWS)
    assert request.parameters == {"top_k": 2}


def test_a_model_without_batch_dimension_takes_the_instances_as_its_tensor():
    request = v1.decode_request({"instances": [[1, 2], [3, 4]]}, "m", UNBATCHED)
    assert request.inputs[0].shape == [2, 2]
    np.testing.assert_array_equal(arrays(UNBATCHED, request)["m"], [[1, 2], [3, 4]])
    several = v1.decode_request({"instances": [{"p": [1, 2, 3], "q": 4}]}, "m", UNBATCHED_TWO)
    assert [i.shape for i in several.inputs] == [[3], []]
    assert arrays(UNBATCHED_TWO, several)["q"] == 4


@pytest.mark.parametrize(
    ("body", "signature", "message"),
    [
        ([], ROWS, "a V1 request must be a JSON object with 'instances' or 'inputs', got a list"),
        ({}, ROWS, r"a V1 request needs 'instances' \(a list of rows\) or 'inputs'"),
        ({"instances": [[1, 2, 3]], "inputs": [[1, 2, 3]]}, ROWS, "either 'instances' or 'inputs', not both"),
        ({"instances": {"x": 1}}, ROWS, "'instances' must be a list, got an object"),
        ({"instances": []}, ROWS, "'instances' is empty"),
        ({"instances": [[1, 2, 3], [4, 5]]}, ROWS, r"input 'x': instance 1 has shape \[2\] but instance 0 has \[3\]"),
        ({"instances": [[1, 2, 3], [4, [5], 6]]}, ROWS, "input 'x': instance 1 is a ragged nested list"),
        ({"instances": [[1, "a", 3]]}, ROWS, "input 'x': values do not fit datatype FP32"),
        ({"instances": [["a", "b"], "c"]}, TEXT, r"input 'text': instance 1 has shape \[\] but instance 0 has \[2\]"),
        ({"instances": [{"a": [1, 2], "b": "x"}, {"a": [1, 2], "b": "x"}, {"a": [1, 2], "b": "x"}, {"a": [1, 2]}]},
         TWO, "instance 3 is missing input 'b'"),
        ({"instances": [{"a": [1, 2], "b": "x", "c": 1}]}, TWO, "instance 0 has unexpected input 'c'; the model takes 'a', 'b'"),
        ({"instances": [[1, 2]]}, TWO, "instance 0 must be an object of input name to value"),
        ({"instances": [[1, 2, 3]], "parameters": [1]}, ROWS, "'parameters' must be an object, got a list"),
        ({"instances": [{"p": [1, 2, 3], "q": 4}, {"p": [1, 2, 3], "q": 4}]}, UNBATCHED_TWO,
         "the model has no batch dimension: send one instance"),
    ],
)
def test_malformed_instances(body, signature, message):
    check_invalid(message, v1.decode_request, body, "m", signature)


def test_the_dataplane_reports_a_wrong_width():
    request = v1.decode_request({"instances": [[1, 2, 3, 4]]}, "m", ROWS)
    check_invalid(r"input 'x': expected shape \[-1, 3\], got \[1, 4\]", prepare_inputs, ROWS, request.inputs)


# -- columns ------------------------------------------------------------------------------------------------
def test_columns_as_a_list_are_the_only_inputs_rows():
    request = v1.decode_request({"inputs": [[1, 2, 3], [4, 5, 6]]}, "m", ROWS)
    np.testing.assert_array_equal(arrays(ROWS, request)["x"], [[1, 2, 3], [4, 5, 6]])


def test_columns_as_an_object_map_input_names_to_rows():
    request = v1.decode_request({"inputs": {"a": [[1, 2], [3, 4]], "b": ["x", "y"]}}, "m", TWO)
    found = arrays(TWO, request)
    assert found["a"].shape == (2, 2)
    assert list(found["b"]) == [b"x", b"y"]


@pytest.mark.parametrize(
    ("body", "signature", "message"),
    [
        ({"inputs": []}, ROWS, "'inputs' is empty"),
        ({"inputs": [[1, 2], [3, 4]]}, TWO, "'inputs' as a list holds the rows of a model's only input"),
        ({"inputs": "x"}, ROWS, "'inputs' must be a list of rows or an object of input name to rows, got a string"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}, ROWS,
         "this is a V2 request"),
        ({"inputs": {"z": [1]}}, ROWS, "unexpected input 'z'"),
    ],
)
def test_malformed_columns(body, signature, message):
    check_invalid(message, v1.decode_request, body, "m", signature)


# -- any JSON body ------------------------------------------------------------------------------------------
def test_decode_json_takes_a_bare_list_a_v1_body_or_a_mapping():
    assert v1.decode_json([[1, 2, 3]], "m", ROWS).inputs[0].shape == [1, 3]
    assert v1.decode_json({"instances": [[1, 2, 3]]}, "m", ROWS).inputs[0].shape == [1, 3]
    assert v1.decode_json({"x": [1, 2, 3]}, "m", ROWS).inputs[0].shape == [1, 3]


def test_looks_like_v2():
    assert v1.looks_like_v2({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]})
    assert not v1.looks_like_v2({"inputs": [[1, 2, 3]]})
    assert not v1.looks_like_v2({"inputs": []})
    assert not v1.looks_like_v2({"instances": [1]})
    assert not v1.looks_like_v2([1])


def test_nested_shape():
    assert v1.nested_shape(3) == []
    assert v1.nested_shape([]) == [0]
    assert v1.nested_shape([[1, 2], [3, 4], [5, 6]]) == [3, 2]
    assert v1.nested_shape([[1, 2], [3]]) is None
    assert v1.nested_shape([[1], 2]) is None


# -- predictions --------------------------------------------------------------------------------------------
def output(name, array):
    array = np.asarray(array)
    datatype = {"f": "FP32", "i": "INT64", "O": "BYTES", "b": "BOOL"}[array.dtype.kind]
    return ResponseOutput(name, datatype, list(array.shape), array)


def response(*outputs):
    return InferenceResponse("m", "1", list(outputs))


def test_one_output_gives_one_prediction_per_row():
    one = response(output("y", np.array([[0.5, 1.5], [2.5, 3.5]], dtype=np.float32)))
    assert v1.encode_response(one, batched=True) == {"predictions": [[0.5, 1.5], [2.5, 3.5]]}
    scalars = response(output("y", np.array([1, 2, 3])))
    assert v1.encode_predictions(scalars, batched=True) == [1, 2, 3]


def test_bytes_predictions_are_text():
    text = response(output("upper", as_bytes_array(["HI", "ÜN"])))
    assert v1.encode_predictions(text, batched=True) == ["HI", "ÜN"]


def test_several_outputs_give_an_object_per_row():
    two = response(output("label", np.array([0, 1])), output("scores", np.array([[1.0, 0.0], [0.25, 0.75]])))
    assert v1.encode_predictions(two, batched=True) == [
        {"label": 0, "scores": [1.0, 0.0]},
        {"label": 1, "scores": [0.25, 0.75]},
    ]


def test_unbatched_predictions_are_the_whole_tensor():
    matrix = response(output("d", np.array([[2.0, 4.0], [6.0, 8.0]])))
    assert v1.encode_predictions(matrix, batched=False) == [[2.0, 4.0], [6.0, 8.0]]
    scalar = response(output("s", np.array(3.5)))
    assert v1.encode_predictions(scalar, batched=False) == [3.5]
    two = response(output("r", np.array([1.0, 2.0])), output("s", np.array(7)))
    assert v1.encode_predictions(two, batched=False) == [{"r": [1.0, 2.0], "s": 7}]


def test_bytes_that_are_not_text_cannot_be_predictions():
    binary = np.empty(1, dtype=object)
    binary[0] = b"\xff\xfe"
    check_invalid("output 'raw' holds bytes that are not UTF-8 text", v1.encode_predictions,
                  response(ResponseOutput("raw", "BYTES", [1], binary)), True)


# -- JSON lines ---------------------------------------------------------------------------------------------
def test_json_lines_round_trip():
    assert v1.loads_lines('[1, 2, 3]\n\n{"x": [4, 5, 6]}\r\n"s"') == [[1, 2, 3], {"x": [4, 5, 6]}, "s"]
    assert v1.dumps_lines([[1, 2], {"a": "b"}]) == b'[1,2]\n{"a":"b"}\n'


@pytest.mark.parametrize(("text", "message"), [("", "has no lines"), ("  \n\n", "has no lines"),
                                               ("[1]\n[2,\n", "JSON lines: line 2: malformed JSON")])
def test_malformed_json_lines(text, message):
    check_invalid(message, v1.loads_lines, text)
