import ml_dtypes
import numpy as np
import pytest

from inferd.calls import prepare_inputs
from inferd.codecs import csv_rows
from inferd.errors import ErrorCode, InferError
from inferd.inference import InferenceResponse, ResponseOutput
from inferd.signature import Signature, TensorSpec
from inferd.tensors import as_bytes_array, numpy_dtype


def single(datatype, shape):
    return Signature((TensorSpec("x", datatype, shape),), (TensorSpec("y", "FP32", (-1,)),))


ROWS = single("FP32", (-1, 3))
TEXT = single("BYTES", (-1,))
TWO = Signature((TensorSpec("a", "FP32", (-1, 2)), TensorSpec("b", "FP32", (-1, 2))), (TensorSpec("y", "FP32", (-1,)),))
UNBATCHED = Signature((TensorSpec("m", "FP32", (2, 2)),), (TensorSpec("d", "FP32", (2, 2)),))


def decoded(text, signature):
    request = csv_rows.decode_request(text, "m", signature)
    found, _ = prepare_inputs(signature, request.inputs)
    return request, found


def check_invalid(match, call, *args):
    with pytest.raises(InferError, match=match) as info:
        call(*args)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


def test_numeric_rows():
    request, found = decoded("1,2,3\r\n4.5, 5 ,6e1\n", ROWS)
    assert (request.inputs[0].shape, request.model_name) == ([2, 3], "m")
    assert found["x"].dtype == np.float32
    np.testing.assert_array_equal(found["x"], [[1, 2, 3], [4.5, 5, 60]])


def test_blank_lines_are_skipped():
    _, found = decoded("\n1,2,3\n\n  \n4,5,6\n\n", ROWS)
    assert found["x"].shape == (2, 3)


@pytest.mark.parametrize(
    ("datatype", "text", "expected"),
    [
        ("INT64", "1\n-2\n 3 \n", [1, -2, 3]),
        ("UINT8", "0\n255\n", [0, 255]),
        ("BOOL", "true\nFALSE\n1\n0\n", [True, False, True, False]),
        ("FP64", "nan\ninf\n", [np.nan, np.inf]),
    ],
)
def test_values_take_the_inputs_datatype(datatype, text, expected):
    _, found = decoded(text, single(datatype, (-1,)))
    assert found["x"].dtype == numpy_dtype(datatype)
    np.testing.assert_array_equal(found["x"], expected)


def test_bf16_and_fp16_inputs():
    _, found = decoded("0.5,1.5\n", single("BF16", (-1, 2)))
    assert found["x"].dtype == ml_dtypes.bfloat16
    _, half = decoded("0.5,1.5\n", single("FP16", (-1, 2)))
    assert half["x"].dtype == np.float16


def test_a_bytes_input_takes_one_string_per_line_and_quoted_commas_work():
    request, found = decoded('hello\n"hello, world"\n"say ""hi"""\n"two\nlines"\n', TEXT)
    assert request.inputs[0].shape == [4]
    assert list(found["x"]) == [b"hello", b"hello, world", b'say "hi"', b"two\nlines"]


def test_rows_of_fixed_higher_rank_are_flattened_row_major():
    _, found = decoded("1,2,3,4\n5,6,7,8\n", single("INT32", (-1, 2, 2)))
    np.testing.assert_array_equal(found["x"], [[[1, 2], [3, 4]], [[5, 6], [7, 8]]])


def test_an_unbatched_input_takes_the_table_as_its_tensor():
    _, found = decoded("1,2\n3,4\n", UNBATCHED)
    np.testing.assert_array_equal(found["m"], [[1, 2], [3, 4]])
    vector = Signature((TensorSpec("v", "FP32", (4,)),), (TensorSpec("d", "FP32", (4,)),))
    _, flat = decoded("1,2\n3,4\n", vector)
    np.testing.assert_array_equal(flat["v"], [1, 2, 3, 4])
    cube = Signature((TensorSpec("c", "FP32", (1, 2, 2)),), (TensorSpec("d", "FP32", (1,)),))
    _, whole = decoded("1,2,3,4\n", cube)
    assert whole["c"].shape == (1, 2, 2)


@pytest.mark.parametrize(
    ("text", "signature", "message"),
    [
        ("", ROWS, "the CSV body has no rows"),
        ("\n \n", ROWS, "the CSV body has no rows"),
        ("1,2,3\n4,5\n", ROWS, "CSV row 2 has 2 fields but row 1 has 3"),
        ("a,b,c\n1,2,3\n", ROWS, r"CSV row 1, column 1: 'a' is not a FP32 value \(a text/csv body has no header row\)"),
        ("1,2,3\n4,,6\n", ROWS, "CSV row 2, column 2: '' is not a FP32 value$"),
        ("1.5\n", single("INT64", (-1,)), "CSV row 1, column 1: '1.5' is not a INT64 value"),
        ("99999999999999999999\n", single("INT64", (-1,)), "'99999999999999999999' is not a INT64 value"),
        ("256\n", single("UINT8", (-1,)), r"out of range for UINT8 \(0 to 255\)"),
        ("yes\n", single("BOOL", (-1,)), "CSV row 1, column 1: 'yes' is not a BOOL value"),
        ("hello, world\n", TEXT, r"takes one value per row, but CSV rows have 2 fields \(quote a field"),
        ("1,2\n", single("FP32", (-1,)), "input 'x' takes one value per row, but CSV rows have 2 fields$"),
        ("1,2,3\n", single("FP32", (-1, 2, 2)), r"input 'x' takes 4 values per row \(shape \[-1, 2, 2\]\), but CSV rows have 3"),
        ("1,2\n", single("FP32", (-1, -1, 2)), "only the batch dimension may be free"),
        ("1,2\n", TWO, "text/csv is for models with one input; this model takes 'a', 'b'"),
        ('"unterminated\n', ROWS, "malformed CSV"),
        ("1,2\n", single("FP32", (2, -1, 2)), "text/csv cannot carry input 'x'"),
    ],
)
def test_malformed_csv(text, signature, message):
    check_invalid(message, csv_rows.decode_request, text, "m", signature)


def test_the_dataplane_reports_a_wrong_width():
    request = csv_rows.decode_request("1,2,3,4\n", "m", ROWS)
    check_invalid(r"input 'x': expected shape \[-1, 3\], got \[1, 4\]", prepare_inputs, ROWS, request.inputs)


def test_decode_text():
    assert csv_rows.decode_text("é".encode("latin-1"), "latin-1") == "é"
    check_invalid("not valid utf-8 text", csv_rows.decode_text, b"\xff", "utf-8")
    check_invalid("unknown charset 'nope'", csv_rows.decode_text, b"1", "nope")


# -- responses ----------------------------------------------------------------------------------------------
def response(*outputs):
    return InferenceResponse("m", "1", [ResponseOutput(n, "X", list(a.shape), a) for n, a in outputs])


def test_one_output_one_line_per_row():
    scores = np.array([[0.1, 0.9], [0.5, 0.5]], dtype=np.float32)
    assert csv_rows.encode_response(response(("y", scores)), batched=True) == b"0.1,0.9\n0.5,0.5\n"
    labels = np.array([3, 4])
    assert csv_rows.encode_response(response(("y", labels)), batched=True) == b"3\n4\n"


def test_several_outputs_are_concatenated_in_order():
    body = csv_rows.encode_response(
        response(("label", np.array([1, 0])), ("scores", np.array([[0.25, 0.75], [1.0, 0.0]])),
                 ("ok", np.array([True, False]))),
        batched=True,
    )
    assert body == b"1,0.25,0.75,true\n0,1.0,0.0,false\n"


def test_text_outputs_are_quoted_when_needed():
    body = csv_rows.encode_response(response(("t", as_bytes_array(["a, b", 'say "hi"', "plain"]))), batched=True)
    assert body == b'"a, b"\n"say ""hi"""\nplain\n'


def test_bf16_outputs_and_unbatched_outputs():
    bf16 = np.array([[0.5, 1.5]], dtype=ml_dtypes.bfloat16)
    assert csv_rows.encode_response(response(("y", bf16)), batched=True) == b"0.5,1.5\n"
    whole = csv_rows.encode_response(response(("d", np.array([[1, 2], [3, 4]])), ("s", np.array(5))), batched=False)
    assert whole == b"1,2,3,4,5\n"


def test_an_empty_batch_gives_an_empty_body():
    assert csv_rows.encode_response(response(("y", np.zeros((0, 2)))), batched=True) == b""


def test_bytes_that_are_not_text_cannot_be_csv():
    binary = np.empty(1, dtype=object)
    binary[0] = b"\xff"
    check_invalid("not UTF-8 text", csv_rows.encode_response, response(("raw", binary)), True)


@pytest.mark.parametrize("field", ["1e100", "-1e39", "1e400"])
def test_numbers_too_large_for_the_datatype_are_refused_with_their_place(field: str) -> None:
    with pytest.raises(InferError, match="outside the range of FP32") as caught:
        csv_rows.parse_numbers(["nan", field], "FP32", width=2)
    assert "row 1, column 2" in caught.value.message
