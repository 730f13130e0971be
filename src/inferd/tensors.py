"""V2 datatypes and their numpy counterparts, and turning wire data into arrays.

BYTES tensors are numpy object arrays whose elements are ``bytes``. BF16 maps to ``ml_dtypes.bfloat16``,
a real numpy dtype, so BF16 tensors keep their precision end to end instead of being widened silently (ml_dtypes
is imported when BF16 is first met: :func:`bf16_dtype`).
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import orjson

from inferd.errors import InferError, invalid

_NUMPY_BY_DATATYPE: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
"""BF16 joins when first needed (:func:`bf16_dtype`)."""
_DATATYPE_BY_NUMPY: dict[np.dtype[Any], str] = {v: k for k, v in _NUMPY_BY_DATATYPE.items()}

DATATYPES: tuple[str, ...] = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                              "FP16", "FP32", "FP64", "BF16", "BYTES")
"""Every V2 datatype inferd accepts, in the order of the Open Inference Protocol's table."""

_BF16_LOCK = threading.Lock()


def bf16_dtype() -> np.dtype[Any]:
    """``ml_dtypes.bfloat16``, imported on first use and then known to every table here. Importing ml_dtypes
    registers a dozen dtypes with numpy, which costs more CPU than the rest of ``inferd serve``'s start-up; a
    server without a BF16 tensor never pays it. (A bfloat16 array cannot exist before ml_dtypes is imported, so
    every dtype test here that meets one can register it first.)"""
    found = _NUMPY_BY_DATATYPE.get("BF16")
    if found is not None:
        return found
    import ml_dtypes

    dtype: np.dtype[Any] = np.dtype(ml_dtypes.bfloat16)
    with _BF16_LOCK:
        if "BF16" not in _NUMPY_BY_DATATYPE:  # the sets first: whoever sees the dict entry sees them too
            _FLOATING.add(dtype)
            _NARROW_FLOATS.add(dtype)
            _LITTLE_ENDIAN["BF16"] = dtype.newbyteorder("<")
            _DATATYPE_BY_NUMPY[dtype] = "BF16"
            _NUMPY_BY_DATATYPE["BF16"] = dtype
    return dtype


def is_bf16(dtype: np.dtype[Any]) -> bool:
    """Whether ``dtype`` is ml_dtypes' bfloat16 (then registered: see :func:`bf16_dtype`)."""
    if dtype.kind != "V" or dtype.name != "bfloat16":
        return False
    return dtype == bf16_dtype()


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype that holds a V2 ``datatype``; INVALID_ARGUMENT for a name outside the protocol."""
    try:
        return _NUMPY_BY_DATATYPE[datatype]
    except KeyError:
        if datatype == "BF16":
            return bf16_dtype()
        raise invalid(f"unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}") from None


def datatype_of(dtype: np.dtype[Any]) -> str:
    """The V2 datatype for a numpy dtype. Strings (``<U``, ``S``) and objects are BYTES."""
    found = _DATATYPE_BY_NUMPY.get(dtype)
    if found is not None:
        return found
    if dtype.kind in "OUS":
        return "BYTES"
    if is_bf16(dtype):
        return "BF16"
    raise ValueError(f"numpy dtype {dtype} has no V2 datatype")


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape)


_FP32 = np.dtype(np.float32)


def to_array(name: str, datatype: str, shape: Sequence[int], data: Any) -> np.ndarray:
    """Turn one input tensor as it came off the wire into an array of ``shape``.

    ``data`` is either an ndarray (binary transports decode straight to arrays) or the JSON form: a flat or
    nested list, or a scalar. Errors name the input and say what was expected and what came.
    """
    if shape and min(shape) < 0:
        raise invalid(f"input {name!r}: shape {list(shape)} has a negative dimension")
    expected = math.prod(shape)
    dtype = numpy_dtype(datatype)
    if isinstance(data, np.ndarray):
        array = _checked_ndarray(name, datatype, dtype, data)
    elif datatype == "BYTES":
        array = _bytes_array(name, data)
    else:
        array = _numeric_array(name, datatype, dtype, data)
    if array.size != expected:
        raise invalid(
            f"input {name!r}: shape {list(shape)} needs {expected} elements but the data has {array.size}"
        )
    return array.reshape(shape)


def _checked_ndarray(name: str, datatype: str, dtype: np.dtype[Any], data: np.ndarray) -> np.ndarray:
    if datatype == "BYTES":
        if data.dtype.kind in "US":
            return _bytes_array(name, data.ravel().tolist())
        if data.dtype != dtype:
            raise invalid(f"input {name!r}: BYTES data must hold bytes or str, got numpy {data.dtype}")
        return data
    if data.dtype != dtype:
        raise invalid(f"input {name!r}: datatype {datatype} needs numpy {dtype}, got {data.dtype}")
    return data


def _numeric_array(name: str, datatype: str, dtype: np.dtype[Any], data: Any) -> np.ndarray:
    if not isinstance(data, np.ndarray):
        plain = json_numbers(data, dtype)  # numbers only: converted once, nothing more to check
        if plain is not None and (dtype.kind != "f" or bool(np.isfinite(plain).all())):
            return plain
        _refuse_strings(name, datatype, data)
    try:
        array = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise invalid(f"input {name!r}: data does not fit datatype {datatype}: {exc}") from None
    except RuntimeWarning:  # numpy's overflow warning, where warnings are errors
        raise _out_of_range(name, datatype) from None
    if dtype.kind == "f" and not np.isfinite(array).all():  # inf or NaN: given as such, or made by the cast?
        if _holds_null(data):  # numpy turns a JSON null into NaN without a word
            raise invalid(f"input {name!r}: the data holds null; {datatype} needs numbers")
        check_finite(name, datatype, array, data, carried=True)  # gRPC's fp32_contents may carry inf and NaN
    if array.dtype != dtype:  # pragma: no cover - asarray with dtype always returns it
        raise invalid(f"input {name!r}: data does not fit datatype {datatype}")
    return array


def _refuse_strings(name: str, datatype: str, data: Any) -> None:
    """Numeric data must be numbers: numpy would read the strings ``"NaN"``, ``"Infinity"`` or ``"1.5"`` (and
    ``"False"`` as true), which JSON has no business sending for a number."""
    if isinstance(data, str | bytes):
        raise _a_string(name, datatype, data)
    if not isinstance(data, list):
        return
    try:
        kind = np.asarray(data).dtype.kind
    except (ValueError, TypeError, OverflowError):
        return  # ragged or odd: the conversion words the error
    if kind in "US":
        raise _a_string(name, datatype, next(_strings(data)))
    if kind == "O":
        found = next(_strings(data), None)
        if found is not None:
            raise _a_string(name, datatype, found)


def _strings(data: Any) -> Iterator[str | bytes]:
    if isinstance(data, str | bytes):
        yield data
    elif isinstance(data, list):
        for value in data:
            yield from _strings(value)


def _a_string(name: str, datatype: str, value: str | bytes) -> InferError:
    text = value if isinstance(value, str) else value.decode("utf-8", "replace")
    shown = text if len(text) <= 40 else text[:40] + "..."
    wanted = "booleans" if datatype == "BOOL" else "numbers"
    return invalid(f"input {name!r}: {datatype} data must be JSON {wanted}, got the string {shown!r}")


def json_numbers(data: Any, dtype: np.dtype[Any]) -> np.ndarray | None:
    """JSON data (a list of numbers, maybe nested) as an array of ``dtype`` when that is plain: numbers only (no
    string, no null), into a floating dtype or the very dtype numpy finds for them; None for anything else, which
    the general conversion (:func:`to_array`) then checks and words. Gives the arrays :func:`to_array` gives."""
    try:
        found = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        return None
    if found.dtype == dtype:
        return found
    if found.dtype.kind not in "biuf":
        return None  # strings, nulls (object), integers too large for int64
    try:
        if dtype.kind == "f":
            return found.astype(dtype)
        return np.asarray(data, dtype=dtype)  # narrower integers: numpy's own range check
    except (ValueError, TypeError, OverflowError, RuntimeWarning):  # (the overflow warning, where it is an error)
        return None


def _holds_null(data: Any) -> bool:
    if data is None:
        return True
    return isinstance(data, list) and any(_holds_null(value) for value in data)


_FLOATING: set[np.dtype[Any]] = {_NUMPY_BY_DATATYPE[t] for t in ("FP16", "FP32", "FP64")}
"""The floating dtypes (BF16's joins with it: :func:`bf16_dtype`)."""


def check_finite(name: str, datatype: str, array: np.ndarray, source: Any = None, *, carried: bool = False) -> None:
    """The one check of floating-point values that came as text (JSON, CSV, batch input files): each must be a
    finite number within the range of ``datatype``. JSON cannot write NaN or an infinity, so whatever reads a
    value from text refuses them, and a number too large for the datatype (``1e400``, or ``3.5e38`` for FP32)
    is refused rather than made infinite. ``source`` holds the values before they were narrowed into ``array``
    (a list, or a wider array), to tell an overflow from NaN or an infinity given as such (None: ``array``
    itself). With ``carried``, NaN and the infinities given as such are values (binary transports and gRPC's typed
    contents carry them) and only an overflow is refused. INVALID_ARGUMENT naming the input."""
    if (array.dtype not in _FLOATING and not is_bf16(array.dtype)) or bool(np.isfinite(array).all()):
        return
    wide = array if source is None else np.asarray(source, dtype=np.float64)
    given = ~np.isfinite(wide)
    if not carried and given.any():
        value = float(np.asarray(wide[given], dtype=np.float64).ravel()[0])
        raise invalid(f"input {name!r}: a value is not a finite number ({value}); {datatype} values from JSON, CSV "
                      "or a batch file must be finite numbers (NaN and the infinities travel only as binary data)")
    if int((~np.isfinite(array)).sum()) > int(given.sum()):
        raise _out_of_range(name, datatype)


_LARGEST = {"FP16": "about ±65504", "FP32": "about ±3.4e38", "FP64": "about ±1.8e308", "BF16": "about ±3.4e38"}


def _out_of_range(name: str, datatype: str) -> InferError:
    return invalid(f"input {name!r}: a value is outside the range of {datatype} ({_LARGEST.get(datatype, '')})")


def _bytes_array(name: str, data: Any) -> np.ndarray:
    flat: list[bytes] = []
    try:
        _flatten_bytes(data, flat)
    except TypeError as exc:
        raise invalid(f"input {name!r}: BYTES data must be strings, {exc}") from None
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array


def _flatten_bytes(data: Any, out: list[bytes]) -> None:
    if isinstance(data, bytes):
        out.append(data)
    elif isinstance(data, str):
        out.append(data.encode("utf-8"))
    elif isinstance(data, list | tuple):
        for item in data:
            _flatten_bytes(item, out)
    else:
        raise TypeError(f"got {type(data).__name__} {data!r}")


def as_bytes_array(values: Iterable[Any]) -> np.ndarray:
    """An object array of ``bytes`` from str/bytes values (str is UTF-8 encoded)."""
    items = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values]
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def to_jsonable(array: np.ndarray, shortest: bool = False) -> list[Any]:
    """The flat JSON form of an array: numbers, booleans, or strings for BYTES (UTF-8 decoded). With
    ``shortest``, FP32, FP16 and BF16 values print in their shortest form (see :func:`shortest_float64`).

    BYTES elements that are not valid UTF-8 cannot be JSON strings; a caller that must carry them uses a
    binary transport. Here they raise ``UnicodeDecodeError`` so the codec can report it.
    """
    flat = array.ravel()
    if flat.dtype == object:
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in flat]
    if shortest and (flat.dtype in _NARROW_FLOATS or is_bf16(flat.dtype)):
        flat = shortest_float64(flat)
    elif is_bf16(flat.dtype):
        flat = flat.astype(np.float32)
    values: list[Any] = flat.tolist()
    return values


_NARROW_FLOATS: set[np.dtype[Any]] = {_NUMPY_BY_DATATYPE["FP32"], _NUMPY_BY_DATATYPE["FP16"]}
"""Floating dtypes narrower than a Python float, which print with digits they never had when widened (and BF16,
once it is known: :func:`bf16_dtype`)."""


def shortest_float64(array: np.ndarray) -> np.ndarray:
    """FP32 values (FP16 values, BF16 ones through FP32) as the float64 values of their shortest decimal form:
    the FP32 value 0.99924076 becomes the float64 0.99924076, not 0.9992407560348511, its exact widening.
    Python, orjson and Arrow print each as that short decimal, which reads back as the same FP32 value. What
    the binary transports carry is the FP32 value itself; this is for text: V1 and SageMaker JSON, batch CSV
    and JSON Lines output."""
    if array.dtype == _NUMPY_BY_DATATYPE["FP16"]:  # rare: numpy's own shortest FP16 text
        return array.astype(str).astype(np.float64)
    flat = np.ascontiguousarray(array.ravel(), dtype=np.float32)
    # orjson writes a float32 array with the shortest digits that read back as the same float32; the float64
    # parsed from those digits prints them again. It writes null for NaN and the infinities: null reads as NaN
    # here, and the infinities are put back.
    values = np.array(orjson.loads(orjson.dumps(flat, option=orjson.OPT_SERIALIZE_NUMPY)), dtype=np.float64)
    infinite = np.isinf(flat)
    if infinite.any():
        values[infinite] = np.where(flat[infinite] > 0, np.inf, -np.inf)
    return values.reshape(array.shape)


_LITTLE_ENDIAN = {datatype: dtype.newbyteorder("<") for datatype, dtype in _NUMPY_BY_DATATYPE.items()
                  if datatype != "BYTES"}


def from_raw(name: str, datatype: str, shape: Sequence[int], raw: bytes | memoryview) -> np.ndarray:
    """An array from the raw little-endian layout that the binary tensor extension and gRPC's
    ``raw_input_contents`` use. BYTES elements are each a 4-byte little-endian length, then the bytes."""
    if shape and min(shape) < 0:
        raise invalid(f"input {name!r}: shape {list(shape)} has a negative dimension")
    count = math.prod(shape)
    if datatype == "BYTES":
        return _bytes_from_raw(name, count, raw).reshape(shape)
    dtype = _LITTLE_ENDIAN.get(datatype)
    if dtype is None:
        numpy_dtype(datatype)  # raises: not a datatype of the protocol (BF16 the first time: now known)
        dtype = _LITTLE_ENDIAN[datatype]
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise invalid(
            f"input {name!r}: shape {list(shape)} of {datatype} needs {expected} bytes but {len(raw)} came"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _bytes_from_raw(name: str, count: int, raw: bytes | memoryview) -> np.ndarray:
    view = memoryview(raw)
    items: list[bytes] = []
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise invalid(f"input {name!r}: BYTES element {len(items)} has a truncated length prefix")
        length = int.from_bytes(view[offset:offset + 4], "little")
        offset += 4
        if offset + length > len(view):
            raise invalid(
                f"input {name!r}: BYTES element {len(items)} says {length} bytes but only "
                f"{len(view) - offset} remain"
            )
        items.append(bytes(view[offset:offset + length]))
        offset += length
    if len(items) != count:
        raise invalid(f"input {name!r}: the shape needs {count} BYTES elements but the data holds {len(items)}")
    array = np.empty(count, dtype=object)
    array[:] = items
    return array


def to_raw(array: np.ndarray) -> bytes:
    """The raw little-endian layout of an array (BYTES length-prefixed), the inverse of :func:`from_raw`."""
    if array.dtype == object:
        parts = []
        for value in array.ravel():
            data = value if isinstance(value, bytes) else str(value).encode("utf-8")
            parts.append(len(data).to_bytes(4, "little"))
            parts.append(data)
        return b"".join(parts)
    if array.dtype.byteorder == "<" or (array.dtype.byteorder in "=|" and sys.byteorder == "little"):
        return array.tobytes()  # C order, whatever the array's layout
    return array.astype(array.dtype.newbyteorder("<")).tobytes()
