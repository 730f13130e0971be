"""The binary tensor data extension, judged by tritonclient: it builds the requests and parses the responses."""

import json

import ml_dtypes
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.http import InferInput, InferRequestedOutput

from inferd.codecs import v2_binary
from inferd.errors import ErrorCode, InferError
from inferd.inference import InferenceRequest, InferenceResponse, RequestOutput, ResponseOutput
from inferd.tensors import as_bytes_array, numpy_dtype, to_array

Client = httpclient.InferenceServerClient

BF16_VALUES = [[1.0, -2.5], [0.15625, 2.0**120]]
"""Exactly representable in bfloat16, so tritonclient's truncation of float32 loses nothing."""


def _int_extremes(dtype: type[np.integer]) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.array([[info.min, 0, info.max], [1, info.max - 1, info.min + 1]], dtype=dtype)


def _float_values(dtype: type[np.floating]) -> np.ndarray:
    info = np.finfo(dtype)
    return np.array([[0.0, -1.5, info.max], [info.tiny, 3.25, -info.max]], dtype=dtype)


# What a tritonclient user hands to set_data_from_numpy, per datatype.
CLIENT_ARRAYS: dict[str, np.ndarray] = {
    "BOOL": np.array([[True, False, True], [False, False, True]]),
    **{f"UINT{b}": _int_extremes(getattr(np, f"uint{b}")) for b in (8, 16, 32, 64)},
    **{f"INT{b}": _int_extremes(getattr(np, f"int{b}")) for b in (8, 16, 32, 64)},
    "FP16": _float_values(np.float16),
    "FP32": _float_values(np.float32),
    "FP64": _float_values(np.float64),
    "BF16": np.array(BF16_VALUES, dtype=np.float32),
    "BYTES": np.array([[b"hello", "h\u00e9llo \u2603".encode(), b""], [b"\x00\xff", b"a\x00b", b"x" * 300]],
                      dtype=object),
}
TEXT = np.array([["hello", "h\u00e9llo \u2603", ""], ["a", "b c", "x" * 300]], dtype=object)
"""BYTES that JSON can carry (tritonclient refuses non-UTF-8 bytes with binary_data=False)."""
DATATYPES = list(CLIENT_ARRAYS)


def _inferd_array(datatype: str, client_array: np.ndarray) -> np.ndarray:
    """What inferd should hold for the client's array."""
    if datatype == "BYTES":
        return as_bytes_array(client_array.ravel()).reshape(client_array.shape)
    return client_array.astype(numpy_dtype(datatype))


def _triton_input(name: str, datatype: str, array: np.ndarray, binary: bool) -> InferInput:
    item = InferInput(name, list(array.shape), datatype)
    item.set_data_from_numpy(array, binary_data=binary)
    return item


def _decode(body: bytes, length: int | str | None) -> InferenceRequest:
    return v2_binary.decode_request(body, length, "m", "1")


def _hand_body(header: dict, tail: bytes = b"") -> tuple[bytes, int]:
    head = json.dumps(header).encode()
    return head + tail, len(head)


def _fail(body: bytes, length: int | str | None, match: str) -> None:
    with pytest.raises(InferError, match=match) as caught:
        _decode(body, length)
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT


# -- requests built by tritonclient ------------------------------------------------------------------
@pytest.mark.parametrize("datatype", DATATYPES)
def test_binary_inputs_of_every_datatype(datatype):
    client_array = CLIENT_ARRAYS[datatype]
    body, length = Client.generate_request_body([_triton_input("x", datatype, client_array, True)])
    assert length is not None
    request = _decode(body, length)
    item = request.inputs[0]
    assert (item.name, item.datatype, item.shape) == ("x", datatype, [2, 3] if datatype != "BF16" else [2, 2])
    assert isinstance(item.data, np.ndarray)
    array = to_array(item.name, item.datatype, item.shape, item.data)  # what the DataPlane does
    expected = _inferd_array(datatype, client_array)
    assert array.dtype == expected.dtype
    np.testing.assert_array_equal(array, expected)


@pytest.mark.parametrize("datatype", [d for d in DATATYPES if d not in ("FP16", "BF16")])
def test_json_inputs_of_every_datatype(datatype):
    client_array = TEXT if datatype == "BYTES" else CLIENT_ARRAYS[datatype]
    body, length = Client.generate_request_body([_triton_input("x", datatype, client_array, False)])
    assert length is None
    item = _decode(body, length).inputs[0]
    assert isinstance(item.data, list)
    array = to_array(item.name, item.datatype, item.shape, item.data)
    np.testing.assert_array_equal(array, _inferd_array(datatype, client_array))


def test_raw_bytes_elements_survive_exactly():
    array = np.array([b"\x00\xff", b"", b"\xff" * 5, "caf\u00e9".encode()], dtype=object)
    body, length = Client.generate_request_body([_triton_input("s", "BYTES", array, True)])
    data = _decode(body, length).inputs[0].data
    assert data.dtype == object
    assert data.tolist() == [b"\x00\xff", b"", b"\xff\xff\xff\xff\xff", b"caf\xc3\xa9"]


def test_mixed_inputs_take_their_bytes_in_order():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([[7, 8]], dtype=np.int64)
    c = np.array([b"\x00\xff", b"z"], dtype=object)
    inputs = [_triton_input("a", "FP32", a, True), _triton_input("b", "INT64", b, False),
              _triton_input("c", "BYTES", c, True)]
    outputs = [InferRequestedOutput("y"), InferRequestedOutput("z", binary_data=False)]
    body, length = Client.generate_request_body(inputs, outputs=outputs, request_id="r1", parameters={"k": "v"})
    request = _decode(body, str(length))
    assert [i.name for i in request.inputs] == ["a", "b", "c"]
    np.testing.assert_array_equal(request.inputs[0].data, a)
    assert request.inputs[1].data == [7, 8]
    assert request.inputs[2].data.tolist() == [b"\x00\xff", b"z"]
    assert request.id == "r1"
    assert request.parameters == {"k": "v"}
    assert v2_binary.binary_outputs(request, ["y", "z"]) == {"y"}


def test_empty_binary_tensor():
    body, length = Client.generate_request_body([_triton_input("x", "FP32", np.zeros((0, 3), np.float32), True)])
    item = _decode(body, length).inputs[0]
    assert item.data.shape == (0, 3)


def test_binary_input_data_is_a_view_of_the_body():
    array = np.arange(1000, dtype=np.float64)
    body, length = Client.generate_request_body([_triton_input("x", "FP64", array, True)])
    data = _decode(body, length).inputs[0].data
    assert np.shares_memory(data, np.frombuffer(body, dtype=np.uint8))


def test_fp16_sent_as_json_is_refused():
    body, length = Client.generate_request_body([_triton_input("x", "FP16", CLIENT_ARRAYS["FP16"], False)])
    _fail(body, length, "FP16 input 'x' must be sent as binary data")


def test_bf16_sent_as_json_is_refused():
    body, length = _hand_body({"inputs": [{"name": "x", "datatype": "BF16", "shape": [1], "data": [1.0]}]})
    _fail(body, length, "BF16 input 'x' must be sent as binary data")
    _fail(body, None, "BF16 input 'x' must be sent as binary data")


def test_bf16_built_by_hand():
    raw = np.array([1.0, -2.5], dtype=ml_dtypes.bfloat16).tobytes()
    body, length = _hand_body(
        {"inputs": [{"name": "x", "datatype": "BF16", "shape": [2], "parameters": {"binary_data_size": 4}}]}, raw
    )
    data = _decode(body, length).inputs[0].data
    assert data.dtype == np.dtype(ml_dtypes.bfloat16)
    assert data.astype(np.float32).tolist() == [1.0, -2.5]


def test_without_the_header_the_body_is_plain_json():
    body = b'{"inputs": [{"name": "x", "datatype": "INT32", "shape": [2], "data": [1, 2]}]}'
    request = _decode(body, None)
    assert request.inputs[0].data == [1, 2]
    assert (request.model_name, request.model_version) == ("m", "1")


# -- which outputs go binary -------------------------------------------------------------------------
def _request(outputs: list[RequestOutput] | None, parameters: dict | None = None) -> InferenceRequest:
    return InferenceRequest("m", [], outputs=outputs, parameters=parameters)


def test_no_outputs_listed_follows_binary_data_output():
    body, length = Client.generate_request_body([_triton_input("x", "INT8", CLIENT_ARRAYS["INT8"], True)])
    request = _decode(body, length)  # tritonclient sets binary_data_output when no outputs are listed
    assert v2_binary.binary_outputs(request, ["y", "z"]) == {"y", "z"}
    assert v2_binary.binary_outputs(_request(None), ["y", "z"]) == set()
    assert v2_binary.binary_outputs(_request(None, {"binary_data_output": False}), ["y"]) == set()


def test_per_output_binary_data_wins_over_the_request_default():
    outputs = [RequestOutput("a", {"binary_data": True}), RequestOutput("b", {"binary_data": False}),
               RequestOutput("c"), RequestOutput("d", {"other": 1})]
    assert v2_binary.binary_outputs(_request(outputs), ["a", "b", "c", "d"]) == {"a"}
    on = _request(outputs, {"binary_data_output": True})
    assert v2_binary.binary_outputs(on, ["a", "b", "c", "d"]) == {"a", "c", "d"}


@pytest.mark.parametrize(
    ("header", "match"),
    [
        ({"parameters": {"binary_data_output": "yes"}}, "request parameter 'binary_data_output' must be true or false"),
        ({"outputs": [{"name": "y", "parameters": {"binary_data": 1}}]}, "output 'y': 'binary_data' must be true or false"),
    ],
)
def test_non_boolean_binary_flags_are_refused(header, match):
    inputs = [{"name": "x", "datatype": "INT32", "shape": [1], "data": [1]}]
    body, length = _hand_body({"inputs": inputs, **header})
    _fail(body, length, match)


# -- responses parsed by tritonclient ----------------------------------------------------------------
def _response(*outputs: ResponseOutput) -> InferenceResponse:
    return InferenceResponse("m", "1", list(outputs), id="r7")


def _output(name: str, datatype: str, array: np.ndarray) -> ResponseOutput:
    return ResponseOutput(name, datatype, list(array.shape), array)


def _parse(body: bytes, length: int | None) -> httpclient.InferResult:
    return Client.parse_response_body(body, verbose=False, header_length=length, content_encoding=None)


def _client_view(datatype: str, array: np.ndarray, binary: bool) -> np.ndarray:
    """What tritonclient's as_numpy gives for an inferd array: BF16 widens to float32, JSON BYTES are str."""
    if datatype == "BF16":
        return array.astype(np.float32)
    if datatype == "BYTES" and not binary:
        return np.array([v.decode() for v in array.ravel()], dtype=object).reshape(array.shape)
    return array


INFERD_ARRAYS = {d: _inferd_array(d, TEXT if d == "BYTES" else a) for d, a in CLIENT_ARRAYS.items()}


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("datatype", DATATYPES)
def test_outputs_of_every_datatype_parse_in_tritonclient(datatype, binary):
    array = INFERD_ARRAYS[datatype]
    body, length = v2_binary.encode_response(_response(_output("y", datatype, array)), {"y"} if binary else set())
    forced = datatype in ("FP16", "BF16")
    assert (length is not None) == (binary or forced)
    result = _parse(body, length)
    got = result.as_numpy("y")
    expected = _client_view(datatype, array, binary or forced)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == (np.float32 if datatype == "BF16" else expected.dtype)
    assert result.get_response()["id"] == "r7"


def test_binary_and_json_outputs_mixed_in_one_response():
    names = [f"o{i}" for i in range(len(DATATYPES))]
    outputs = [_output(n, d, INFERD_ARRAYS[d]) for n, d in zip(names, DATATYPES, strict=True)]
    binary = set(names[::2])
    body, length = v2_binary.encode_response(_response(*outputs), binary)
    assert length is not None
    header = json.loads(body[:length])
    went_binary = {o["name"] for o in header["outputs"] if "parameters" in o}
    forced = {n for n, d in zip(names, DATATYPES, strict=True) if d in ("FP16", "BF16")}
    assert went_binary == binary | forced
    for entry in header["outputs"]:
        assert ("data" in entry) != (entry["name"] in went_binary)
        if "parameters" in entry:
            assert set(entry["parameters"]) == {"binary_data_size"}
    assert length + sum(o["parameters"]["binary_data_size"] for o in header["outputs"] if "parameters" in o) \
        == len(body)
    result = _parse(body, length)
    for name, datatype in zip(names, DATATYPES, strict=True):
        expected = _client_view(datatype, INFERD_ARRAYS[datatype], name in went_binary)
        np.testing.assert_array_equal(result.as_numpy(name), expected)


def test_fp16_is_binary_even_when_json_was_asked():
    array = INFERD_ARRAYS["FP16"]
    body, length = v2_binary.encode_response(_response(_output("h", "FP16", array), _output(
        "i", "INT32", INFERD_ARRAYS["INT32"])), set())
    assert length is not None
    header = json.loads(body[:length])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": array.nbytes}
    assert "parameters" not in header["outputs"][1]
    np.testing.assert_array_equal(_parse(body, length).as_numpy("h"), array)


def test_all_json_response_is_the_v2_json_body():
    outputs = [_output("y", "FP32", INFERD_ARRAYS["FP32"]), _output("s", "BYTES", INFERD_ARRAYS["BYTES"])]
    body, length = v2_binary.encode_response(_response(*outputs), set())
    assert length is None
    payload = json.loads(body)
    assert all("parameters" not in o for o in payload["outputs"])
    np.testing.assert_array_equal(_parse(body, None).as_numpy("y"), INFERD_ARRAYS["FP32"])


def test_non_utf8_bytes_output_is_forced_binary():
    raw = as_bytes_array([b"\x00\xff", b"ok"])
    body, length = v2_binary.encode_response(_response(_output("s", "BYTES", raw), _output(
        "t", "BYTES", as_bytes_array(["fine"]))), set())
    assert length is not None
    header = json.loads(body[:length])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 4 + 2 + 4 + 2
    assert header["outputs"][1]["data"] == ["fine"]
    result = _parse(body, length)
    assert result.as_numpy("s").tolist() == [b"\x00\xff", b"ok"]
    assert result.as_numpy("t").tolist() == ["fine"]


def test_output_parameters_are_kept_beside_binary_data_size():
    output = ResponseOutput("y", "INT32", [1], np.array([5], np.int32), parameters={"note": "x"})
    body, length = v2_binary.encode_response(_response(output), {"y"})
    assert length is not None
    assert json.loads(body[:length])["outputs"][0]["parameters"] == {"note": "x", "binary_data_size": 4}


def test_empty_binary_output():
    body, length = v2_binary.encode_response(_response(_output("y", "FP32", np.zeros((0, 2), np.float32))), {"y"})
    assert length == len(body)
    assert _parse(body, length).as_numpy("y").shape == (0, 2)


def test_round_trip_through_tritonclient_request_and_response():
    array = INFERD_ARRAYS["FP64"]
    body, length = Client.generate_request_body([_triton_input("x", "FP64", array, True)],
                                                outputs=[InferRequestedOutput("x")])
    request = _decode(body, length)
    response = _response(_output("x", "FP64", request.inputs[0].data))
    out, out_length = v2_binary.encode_response(response, v2_binary.binary_outputs(request, ["x"]))
    assert out_length is not None
    np.testing.assert_array_equal(_parse(out, out_length).as_numpy("x"), array)


def test_response_headers():
    assert v2_binary.response_headers(None) == {"content-type": "application/json"}
    assert v2_binary.response_headers(12) == {"content-type": "application/octet-stream",
                                              "inference-header-content-length": "12"}


# -- malformed bodies --------------------------------------------------------------------------------
def _binary_fp32_body() -> tuple[bytes, int]:
    return Client.generate_request_body([_triton_input("x", "FP32", np.ones((2, 2), np.float32), True)])


@pytest.mark.parametrize("value", ["abc", "-5", "1.5", "", " ", "\u0661\u0662", -1, True, 2.0])
def test_header_length_that_is_not_a_non_negative_integer(value):
    body, _ = _binary_fp32_body()
    _fail(body, value, "Inference-Header-Content-Length must be a non-negative integer")


def test_header_length_accepts_str_and_int():
    assert v2_binary.parse_header_length(" 42 ") == 42
    assert v2_binary.parse_header_length(0) == 0
    assert v2_binary.parse_header_length(None) is None


def test_header_length_bigger_than_the_body():
    body, _ = _binary_fp32_body()
    _fail(body, len(body) + 1, f"Inference-Header-Content-Length is {len(body) + 1} but the body has only {len(body)} bytes")


def test_header_length_that_cuts_the_json():
    body, length = _binary_fp32_body()
    _fail(body, length - 3, "malformed JSON")


def test_binary_body_sent_without_the_header():
    body, _ = _binary_fp32_body()
    _fail(body, None, "malformed JSON")


def test_truncated_tensor_data():
    body, length = _binary_fp32_body()
    _fail(body[:-5], length, "input 'x' needs 16 bytes of binary data but only 11 remain")


def test_binary_size_without_any_bytes():
    header = {"inputs": [{"name": "x", "datatype": "INT8", "shape": [2], "parameters": {"binary_data_size": 2}}]}
    _fail(json.dumps(header).encode(), None, "input 'x' needs 2 bytes of binary data but only 0 remain")


def test_leftover_bytes_are_reported():
    body, length = _binary_fp32_body()
    _fail(body + b"\x00" * 3, length, "3 bytes of binary data after the JSON header are unaccounted for")


def test_bytes_element_whose_length_runs_past_the_end():
    tail = (10).to_bytes(4, "little") + b"abc"
    body, length = _hand_body(
        {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(tail)}}]},
        tail,
    )
    _fail(body, length, "input 's': BYTES element 0 says 10 bytes but only 3 remain")


def test_bytes_element_with_a_truncated_length_prefix():
    tail = b"\x01\x00"
    body, length = _hand_body(
        {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 2}}]}, tail
    )
    _fail(body, length, "BYTES element 0 has a truncated length prefix")


@pytest.mark.parametrize("size", ["16", -1, 1.5, True, None, [16]])
def test_binary_data_size_that_is_not_a_non_negative_integer(size):
    body, _ = _binary_fp32_body()
    header, length = _hand_body(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "parameters": {"binary_data_size": size}}]},
        body[-16:],
    )
    _fail(header, length, f"input 'x': binary_data_size must be a non-negative integer, got {size!r}".replace("[", r"\["))


def test_binary_data_size_that_does_not_fit_the_shape():
    body, length = _hand_body(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "parameters": {"binary_data_size": 12}}]},
        b"\x00" * 12,
    )
    _fail(body, length, r"input 'x': shape \[2, 2\] of FP32 needs 16 bytes but 12 came")


def test_both_data_and_binary_data_size():
    body, length = _hand_body(
        {"inputs": [{"name": "x", "datatype": "INT8", "shape": [1], "data": [1], "parameters": {"binary_data_size": 1}}]},
        b"\x01",
    )
    _fail(body, length, "input 'x' has both 'data' and binary_data_size")


def test_unknown_datatype_in_binary_input():
    body, length = _hand_body(
        {"inputs": [{"name": "x", "datatype": "FP8", "shape": [1], "parameters": {"binary_data_size": 1}}]}, b"\x01"
    )
    _fail(body, length, "unknown datatype 'FP8'")


@pytest.mark.parametrize(
    ("header", "match"),
    [
        ([], "request body must be a JSON object"),
        ({"inputs": [{"datatype": "FP32", "parameters": {"binary_data_size": 4}}]}, r"inputs\[0\] needs a 'name' string"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1], "parameters": 4}]}, "'parameters' must be an object"),
    ],
)
def test_malformed_json_header_is_reported_by_the_json_codec(header, match):
    body, length = _hand_body(header, b"\x00" * 4)
    _fail(body, length, match)
