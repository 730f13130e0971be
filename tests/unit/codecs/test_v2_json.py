import numpy as np
import pytest

from inferd.codecs import v2_json
from inferd.errors import ErrorCode, InferError
from inferd.inference import InferenceResponse, ResponseOutput
from inferd.signature import Signature, TensorSpec
from inferd.tensors import as_bytes_array

SIG = Signature(
    (TensorSpec("input", "FP32", (-1, 3)), TensorSpec("text", "BYTES", (-1,))),
    (TensorSpec("y", "FP32", (-1,)),),
)


def test_decode_a_v2_request():
    body = b'{"id": "7", "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3],' \
           b' "parameters": {"x": 1}}], "outputs": [{"name": "y"}], "parameters": {"priority": 1}}'
    request = v2_json.decode_request(v2_json.loads(body), "m", "2")
    assert (request.model_name, request.model_version, request.id) == ("m", "2", "7")
    assert request.inputs[0].shape == [1, 3]
    assert request.inputs[0].parameters == {"x": 1}
    assert request.outputs is not None
    assert request.outputs[0].name == "y"
    assert request.parameters == {"priority": 1}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "malformed JSON"),
        (b"[]", "request body must be a JSON object, got a list"),
        (b"{}", "request needs a non-empty 'inputs' list"),
        (b'{"inputs": [1]}', r"inputs\[0\] must be an object"),
        (b'{"inputs": [{"datatype": "FP32"}]}', r"inputs\[0\] needs a 'name' string"),
        (b'{"inputs": [{"name": "a", "shape": [1], "data": [1]}]}', "input 'a' needs a 'datatype' string"),
        (b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": ["1"], "data": [1]}]}', "'shape' list of integers"),
        (b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [true], "data": [1]}]}', "'shape' list of integers"),
        (b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1]}]}', "input 'a' has no 'data'"),
        (b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]}], "outputs": {}}',
         "'outputs' must be a list"),
        (b'{"id": 5, "inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]}]}', "'id' must be a string"),
        (b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1], "parameters": 3}]}',
         "'parameters' must be an object"),
    ],
)
def test_malformed_requests(body, message):
    with pytest.raises(InferError, match=message) as info:
        v2_json.decode_request(v2_json.loads(body), "m")
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


def test_plain_mapping_takes_datatypes_from_the_signature_and_adds_a_batch_axis():
    request = v2_json.decode_mapping({"input": [1, 2, 3], "text": "hello"}, "m", SIG)
    first, second = request.inputs
    assert (first.datatype, first.shape, first.data) == ("FP32", [1, 3], [1, 2, 3])
    assert (second.datatype, second.shape, second.data) == ("BYTES", [1], ["hello"])
    batch = v2_json.decode_mapping({"input": [[1, 2, 3], [4, 5, 6]]}, "m", SIG)
    assert batch.inputs[0].shape == [2, 3]


def test_plain_mapping_errors():
    with pytest.raises(InferError, match="unexpected input 'pixels'"):
        v2_json.decode_mapping({"pixels": [1]}, "m", SIG)
    with pytest.raises(InferError, match="not a regular nested list"):
        v2_json.decode_mapping({"input": [[1, 2, 3], [1]]}, "m", SIG)
    with pytest.raises(InferError, match="mapping of input name to values"):
        v2_json.decode_mapping([], "m", SIG)


def test_encode_response_has_no_parameters_unless_needed():
    response = InferenceResponse("m", "1", [
        ResponseOutput("y", "FP32", [2], np.array([0.5, 1.5], dtype=np.float32)),
        ResponseOutput("label", "BYTES", [2], as_bytes_array(["ham", "spam"])),
    ], id="9")
    body = v2_json.loads(v2_json.dumps(v2_json.encode_response(response)))
    assert body == {
        "model_name": "m", "model_version": "1", "id": "9",
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [2], "data": [0.5, 1.5]},
            {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["ham", "spam"]},
        ],
    }


def test_binary_bytes_outputs_cannot_be_json():
    response = InferenceResponse("m", "1", [ResponseOutput("b", "BYTES", [1], as_bytes_array([b"\xff"]))])
    with pytest.raises(InferError, match="not UTF-8 text"):
        v2_json.encode_response(response)
