"""CSV bodies, as SageMaker's ``text/csv`` sends and expects them: one row per line, no header.

Requests are for a model with one input. Each record is one row of that input:

* an input of shape ``[-1]`` takes one value per line (for BYTES, the line is one string; quote a field
  that holds commas, ``"hello, world"``),
* ``[-1, d]`` takes the line's fields as the row's features,
* ``[-1, a, b, ...]`` with fixed dimensions takes ``a*b*...`` fields per line, in row-major order.

Numeric fields are parsed as the input's datatype (BOOL: ``true``/``false``/``1``/``0``); blank lines are
skipped. For a model without a batch dimension the table is the input's whole tensor: ``[lines, fields]``
for a rank-2 input, every value in order for a rank-1 input, and for fixed shapes exactly as many values
as the shape holds.

Responses have one line per row: the row's values of the only output, or of every output concatenated in
the response's order (the signature's). BYTES values are UTF-8 text, booleans ``true``/``false``. A model
without a batch dimension gives one line with all its values.

All functions are pure.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from inferd.errors import InferError, invalid
from inferd.inference import InferenceRequest, InferenceResponse, RequestInput
from inferd.signature import FREE, Signature, TensorSpec
from inferd.tensors import is_bf16, numpy_dtype

_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})


def decode_text(body: bytes, charset: str = "utf-8") -> str:
    """A text body in its declared charset; INVALID_ARGUMENT when it does not decode."""
    try:
        return body.decode(charset)
    except LookupError:
        raise invalid(f"unknown charset {charset!r}") from None
    except UnicodeDecodeError as exc:
        raise invalid(f"the body is not valid {charset} text: {exc}") from None


# -- requests --------------------------------------------------------------------------------------------
def decode_request(text: str, model_name: str, signature: Signature,
                   model_version: str | None = None) -> InferenceRequest:
    """A CSV body as a request for the model's only input."""
    if len(signature.inputs) != 1:
        names = ", ".join(repr(n) for n in signature.input_names()) or "no inputs"
        raise invalid(f"text/csv is for models with one input; this model takes {names}: send JSON")
    spec = signature.inputs[0]
    table = read_rows(text)
    width = _common_width(table)
    shape = _table_shape(spec, len(table), width, signature.batched)
    fields = [field for row in table for field in row]
    data: Any = fields if spec.datatype == "BYTES" else parse_numbers(fields, spec.datatype, width)
    return InferenceRequest(model_name, [RequestInput(spec.name, spec.datatype, shape, data)],
                            model_version=model_version)


def read_rows(text: str) -> list[list[str]]:
    """The records of a CSV text, blank lines skipped; INVALID_ARGUMENT when there are none."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        rows = [row for row in reader if row and not (len(row) == 1 and not row[0].strip())]
    except csv.Error as exc:
        raise invalid(f"malformed CSV at line {reader.line_num}: {exc}") from None
    if not rows:
        raise invalid("the CSV body has no rows")
    return rows


def _common_width(table: list[list[str]]) -> int:
    width = len(table[0])
    for number, row in enumerate(table, start=1):
        if len(row) != width:
            raise invalid(f"CSV row {number} has {len(row)} fields but row 1 has {width}")
    return width


def _table_shape(spec: TensorSpec, rows: int, width: int, batched: bool) -> list[int]:
    """The input shape a table of ``rows`` lines of ``width`` fields stands for."""
    if not batched:
        return _whole_tensor_shape(spec, rows, width)
    row_shape = spec.shape[1:]
    if not row_shape:
        if width != 1:
            hint = " (quote a field that contains commas)" if spec.datatype == "BYTES" else ""
            raise invalid(f"input {spec.name!r} takes one value per row, but CSV rows have {width} fields{hint}")
        return [rows]
    if len(row_shape) == 1:
        return [rows, width]
    if FREE in row_shape:
        raise invalid(f"text/csv cannot carry input {spec.name!r} of shape {list(spec.shape)}: "
                      "only the batch dimension may be free; send JSON")
    needed = math.prod(row_shape)
    if width != needed:
        raise invalid(f"input {spec.name!r} takes {needed} values per row (shape {list(spec.shape)}), "
                      f"but CSV rows have {width}")
    return [rows, *row_shape]


def _whole_tensor_shape(spec: TensorSpec, rows: int, width: int) -> list[int]:
    if len(spec.shape) == 2:
        return [rows, width]
    if len(spec.shape) == 1:
        return [rows * width]
    if FREE in spec.shape:
        raise invalid(f"text/csv cannot carry input {spec.name!r} of shape {list(spec.shape)}; send JSON")
    return list(spec.shape)


def parse_numbers(fields: Sequence[str], datatype: str, width: int = 1) -> np.ndarray:
    """CSV fields as a flat array of ``datatype``; errors name the row and column of the first bad field."""
    dtype = numpy_dtype(datatype)
    if datatype == "BOOL":
        return np.array([_boolean(field, index, width) for index, field in enumerate(fields)], dtype=dtype)
    wide = np.int64 if dtype.kind in "iu" else np.float64
    try:
        parsed = np.array(fields, dtype=str).astype(wide)
    except (ValueError, OverflowError):
        raise _bad_field(fields, datatype, width, wide) from None
    if dtype.kind in "iu" and parsed.size:
        limits = np.iinfo(dtype)
        if parsed.min() < limits.min or parsed.max() > limits.max:
            raise invalid(f"CSV values are out of range for {datatype} ({limits.min} to {limits.max})")
        return parsed.astype(dtype)
    with np.errstate(over="ignore"):  # an overflow becomes an infinity: refused below, with its place
        narrowed = parsed.astype(dtype)
    if not bool(np.isfinite(narrowed).all()):
        _refuse_overflow(fields, narrowed, datatype, width)
    return narrowed


_NOT_FINITE_WORDS = frozenset({"nan", "inf", "infinity"})


def _refuse_overflow(fields: Sequence[str], narrowed: np.ndarray, datatype: str, width: int) -> None:
    """NaN and the infinities written as such are values (a missing feature for XGBoost is NaN), but a number
    too large for the datatype (``1e100`` for FP32, ``1e400``) is refused rather than made infinite."""
    for index in np.flatnonzero(~np.isfinite(narrowed)):
        field = fields[int(index)]
        if field.strip().lower().lstrip("+-") not in _NOT_FINITE_WORDS:
            raise invalid(f"{_where(int(index), width)}: {field!r} is outside the range of {datatype}")


def _boolean(field: str, index: int, width: int) -> bool:
    word = field.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise invalid(f"{_where(index, width)}: {field!r} is not a BOOL value (true, false, 1 or 0)")


def _bad_field(fields: Sequence[str], datatype: str, width: int, wide: type[Any]) -> InferError:
    for index, field in enumerate(fields):
        try:
            np.array([field], dtype=str).astype(wide)
        except (ValueError, OverflowError):
            header = " (a text/csv body has no header row)" if index < width else ""
            return invalid(f"{_where(index, width)}: {field!r} is not a {datatype} value{header}")
    return invalid(f"CSV values do not fit {datatype}")


def _where(index: int, width: int) -> str:
    return f"CSV row {index // width + 1}, column {index % width + 1}"


# -- responses -------------------------------------------------------------------------------------------
def encode_response(response: InferenceResponse, batched: bool) -> bytes:
    """One CSV line per row: the values of every output for that row, outputs in the response's order."""
    cells = [_cells(output.data) for output in response.outputs]
    if not batched:
        lines = [[cell for output in cells for cell in output]]
    else:
        count = response.outputs[0].shape[0] if response.outputs and response.outputs[0].shape else 0
        lines = [_row(cells, row, count) for row in range(count)]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(lines)
    return out.getvalue().encode("utf-8")


def _row(cells: list[list[str]], row: int, count: int) -> list[str]:
    line: list[str] = []
    for output in cells:
        size = len(output) // count
        line.extend(output[row * size:(row + 1) * size])
    return line


def _cells(array: np.ndarray) -> list[str]:
    """An array's values, flat, as CSV text."""
    flat = array.ravel()
    if flat.dtype == object:
        return [_text(value) for value in flat]
    if flat.dtype == np.bool_:
        return ["true" if value else "false" for value in flat.tolist()]
    if is_bf16(flat.dtype):
        flat = flat.astype(np.float32)
    cells: list[str] = flat.astype(str).tolist()
    return cells


def _text(value: Any) -> str:
    if not isinstance(value, bytes):
        return str(value)
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid("an output holds bytes that are not UTF-8 text, which CSV cannot carry") from None
