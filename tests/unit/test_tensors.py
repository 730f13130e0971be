import warnings

import ml_dtypes
import numpy as np
import pytest

from inferd.errors import ErrorCode, InferError
from inferd.tensors import (
    DATATYPES,
    as_bytes_array,
    check_finite,
    datatype_of,
    json_numbers,
    numpy_dtype,
    shortest_float64,
    to_array,
    to_jsonable,
)

NUMERIC = [d for d in DATATYPES if d != "BYTES"]


@pytest.mark.parametrize("datatype", NUMERIC)
def test_every_numeric_datatype_round_trips_through_numpy(datatype):
    dtype = numpy_dtype(datatype)
    values = [[0, 1], [1, 0]] if datatype == "BOOL" else [[1, 2], [3, 4]]
    array = to_array("x", datatype, [2, 2], values)
    assert array.dtype == dtype
    assert array.shape == (2, 2)
    assert datatype_of(array.dtype) == datatype
    back = to_array("x", datatype, [2, 2], to_jsonable(array))
    np.testing.assert_array_equal(back, array)


def test_bf16_is_ml_dtypes_bfloat16():
    array = to_array("x", "BF16", [3], [1.5, -2.0, 0.25])
    assert array.dtype == np.dtype(ml_dtypes.bfloat16)
    assert to_jsonable(array) == [1.5, -2.0, 0.25]


def test_bytes_accepts_text_and_binary_and_keeps_bytes():
    array = to_array("s", "BYTES", [1, 3], [["héllo", b"\x00\xff", ""]])
    assert array.dtype == object
    assert array.tolist() == [["héllo".encode(), b"\x00\xff", b""]]
    assert datatype_of(array.dtype) == "BYTES"
    assert to_jsonable(as_bytes_array(["a", b"b"])) == ["a", "b"]


def test_non_utf8_bytes_cannot_become_json_text():
    with pytest.raises(UnicodeDecodeError):
        to_jsonable(as_bytes_array([b"\xff"]))


def test_ndarray_data_must_have_the_declared_dtype():
    with pytest.raises(InferError, match="datatype FP32 needs numpy float32, got float64") as info:
        to_array("x", "FP32", [2], np.zeros(2))
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert to_array("x", "FP32", [1, 2], np.zeros(2, dtype=np.float32)).shape == (1, 2)


@pytest.mark.parametrize(
    ("datatype", "shape", "data", "message"),
    [
        ("FP32", [2, 3], [1, 2, 3], "shape \\[2, 3\\] needs 6 elements but the data has 3"),
        ("FP32", [2], ["a", "b"], "FP32 data must be JSON numbers, got the string 'a'"),
        ("UINT8", [1], [300], "does not fit datatype UINT8"),
        ("FP32", [2, 2], [[1, 2], [3]], "does not fit datatype FP32"),
        ("BYTES", [1], [5], "BYTES data must be strings"),
        ("FP32", [-1], [], "negative dimension"),
        ("COMPLEX", [1], [1], "unknown datatype 'COMPLEX'"),
    ],
)
def test_bad_data_names_the_input(datatype, shape, data, message):
    with pytest.raises(InferError, match=message) as info:
        to_array("pixels", datatype, shape, data)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert "pixels" in info.value.message or "COMPLEX" in info.value.message


def test_string_numpy_arrays_are_bytes():
    assert datatype_of(np.array(["a"]).dtype) == "BYTES"
    with pytest.raises(ValueError, match="no V2 datatype"):
        datatype_of(np.dtype(np.complex64))


@pytest.mark.parametrize("datatype", DATATYPES)
def test_raw_layout_round_trips_every_datatype(datatype):
    from inferd.tensors import from_raw, to_raw

    if datatype == "BYTES":
        array = as_bytes_array(["a", "", "ünï", b"\x00\xff"]).reshape(2, 2)
    else:
        array = to_array("x", datatype, [2, 2], [[1, 0], [1, 1]])
    back = from_raw("x", datatype, [2, 2], to_raw(array))
    assert back.shape == (2, 2)
    assert datatype_of(back.dtype) == datatype
    np.testing.assert_array_equal(back, array)


def test_bytes_raw_layout_is_length_prefixed():
    from inferd.tensors import to_raw

    assert to_raw(as_bytes_array(["ab", ""])) == b"\x02\x00\x00\x00ab\x00\x00\x00\x00"


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "message"),
    [
        ("FP32", [2], b"\x00" * 7, r"shape \[2\] of FP32 needs 8 bytes but 7 came"),
        ("BYTES", [1], b"\x05\x00\x00\x00abc", "BYTES element 0 says 5 bytes but only 3 remain"),
        ("BYTES", [2], b"\x01\x00\x00\x00a\x01\x00", "BYTES element 1 has a truncated length prefix"),
        ("BYTES", [2], b"\x01\x00\x00\x00a", "the shape needs 2 BYTES elements but the data holds 1"),
    ],
)
def test_raw_errors(datatype, shape, raw, message):
    from inferd.tensors import from_raw

    with pytest.raises(InferError, match=message) as info:
        from_raw("t", datatype, shape, raw)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


@pytest.mark.parametrize("warnings_are_errors", [True, False])
@pytest.mark.parametrize("value", [3.4028235677973366e38, -1e39, 1e300])
def test_a_json_number_past_fp32s_range_is_invalid_not_inf(value, warnings_are_errors):
    """Found by the codec fuzzer: the cast turned it into inf with only a RuntimeWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error" if warnings_are_errors else "ignore")
        with pytest.raises(InferError) as caught:
            to_array("x", "FP32", [2], [1.0, value])
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    assert "range of FP32" in caught.value.message


def test_infinities_and_nan_given_as_such_stay():
    """gRPC's fp32_contents can carry them; only a finite number that overflowed the cast is refused."""
    array = to_array("x", "FP32", [3], [float("inf"), float("-inf"), float("nan")])
    assert np.isinf(array[:2]).all()
    assert np.isnan(array[2])


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
@pytest.mark.parametrize(("shape", "data"), [([2], [1.0, None]), ([2, 2], [[1.0, 2.0], [None, 4.0]]), ([1], None)])
def test_a_null_in_float_data_is_invalid_not_nan(datatype, shape, data):
    """numpy would make it NaN; a client that sent null did not mean a number."""
    with pytest.raises(InferError, match=f"the data holds null; {datatype} needs numbers") as caught:
        to_array("x", datatype, shape, data)
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT


def test_fp32_values_print_in_their_shortest_form_and_read_back_exactly():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, 20_000, dtype=np.uint64).astype(np.uint32)
    values = bits.view(np.float32)  # every kind of float32: subnormals, huge ones, NaNs, infinities
    printed = shortest_float64(values)
    finite = np.isfinite(values)
    np.testing.assert_array_equal(printed[finite].astype(np.float32), values[finite])  # the same FP32 values
    sample = zip(printed[finite][:2000], values[finite][:2000], strict=True)
    assert all(repr(float(p)) == repr(float(str(v))) for p, v in sample)  # numpy's shortest digits
    assert np.isnan(printed[np.isnan(values)]).all()
    np.testing.assert_array_equal(printed[np.isinf(values)], values[np.isinf(values)])
    assert shortest_float64(np.zeros((0, 3), dtype=np.float32)).shape == (0, 3)


def test_to_jsonable_gives_the_shortest_form_only_when_asked():
    fp32 = np.array([[0.99924076, 0.1]], dtype=np.float32)
    assert repr(to_jsonable(fp32, shortest=True)) == "[0.99924076, 0.1]"
    assert repr(to_jsonable(fp32)) == "[0.9992407560348511, 0.10000000149011612]"  # as the V2 JSON path has it
    assert repr(to_jsonable(np.array([0.1], dtype=np.float16), shortest=True)) == "[0.1]"
    assert repr(to_jsonable(np.array([0.1], dtype=ml_dtypes.bfloat16), shortest=True)) == "[0.100097656]"  # FP32's digits
    assert repr(to_jsonable(np.array([0.1], dtype=np.float64), shortest=True)) == "[0.1]"


@pytest.mark.parametrize(("datatype", "shape", "data", "shown"), [
    ("FP32", [1], ["NaN"], "'NaN'"),
    ("FP32", [2], [1.0, "Infinity"], "'Infinity'"),
    ("FP32", [2], [1.0, "-Infinity"], "'-Infinity'"),
    ("FP64", [2, 1], [[1.0], ["2.5"]], "'2.5'"),
    ("FP32", [], "NaN", "'NaN'"),
    ("FP32", [2], [None, "nan"], "'nan'"),
    ("INT64", [1], ["3"], "'3'"),
    ("BOOL", [1], ["False"], "'False'"),
])
def test_strings_are_refused_as_numeric_json_data(datatype, shape, data, shown):
    """numpy reads "NaN", "Infinity" and "2.5" as numbers (and "False" as true): JSON data must be numbers."""
    with pytest.raises(InferError) as caught:
        to_array("pixels", datatype, shape, data)
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    assert caught.value.message.startswith("input 'pixels': ")
    assert f"got the string {shown}" in caught.value.message


@pytest.mark.parametrize("data", [["NaN"], [1.0, None], [[1.0], ["2"]], [[1.0, 2.0], [3.0]], [2**70]])
def test_json_numbers_leaves_anything_but_plain_numbers_to_the_general_conversion(data):
    assert json_numbers(data, np.dtype(np.float32)) is None


@pytest.mark.parametrize(("datatype", "data"), [("FP32", [[1, 2.5], [3, 4]]), ("FP64", [1.5, 2]), ("INT32", [1, -2]),
                                                ("INT64", [7]), ("BOOL", [True, False]), ("UINT8", [255, 0])])
def test_json_numbers_gives_the_arrays_to_array_gives(datatype, data):
    made = json_numbers(data, numpy_dtype(datatype))
    expected = to_array("x", datatype, list(np.shape(data)), data)
    assert made is not None
    assert made.dtype == expected.dtype
    np.testing.assert_array_equal(made, expected)


@pytest.mark.parametrize(("values", "source", "message"), [
    (np.array([1.0, np.inf], dtype=np.float32), np.array([1.0, 3.5e38]), "outside the range of FP32"),
    (np.array([np.nan], dtype=np.float32), None, r"not a finite number \(nan\)"),
    (np.array([1.0, -np.inf], dtype=np.float32), [1.0, float("-inf")], r"not a finite number \(-inf\)"),
])
def test_check_finite_refuses_overflow_nan_and_infinities(values, source, message):
    with pytest.raises(InferError, match=message) as caught:
        check_finite("x", "FP32", values, source)
    assert caught.value.message.startswith("input 'x': ")


def test_check_finite_passes_finite_values_and_carried_ones():
    check_finite("x", "FP32", np.array([1.0, 3.4e38], dtype=np.float32))
    check_finite("x", "INT64", np.array([1, 2]))
    check_finite("x", "FP32", np.array([np.nan, np.inf], dtype=np.float32), carried=True)
    with pytest.raises(InferError, match="outside the range"):
        check_finite("x", "FP32", np.array([np.inf], dtype=np.float32), [1e39], carried=True)
