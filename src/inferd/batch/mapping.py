"""Records to model inputs and model outputs back to columns, from the model's signature.

A model input takes the column of the same name, or the column(s) an explicit mapping names (``input=col``,
or ``input=a,b,c`` to stack several columns into one tensor). A model with one
tensor input and no column of that name takes every feature column in order (all columns but the key), or
the one list column there is. Text columns feed BYTES inputs. Values are cast the way Arrow casts safely: a
value that does not fit (text in a number column, 1.5 for an integer input, a null) fails its record, never
silently. Multi-dimensional outputs become list columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from inferd.batch.options import BatchError
from inferd.errors import invalid
from inferd.signature import FREE, Signature, TensorSpec
from inferd.tensors import check_finite, numpy_dtype

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True, slots=True)
class Binding:
    """Which input columns feed one model input."""

    spec: TensorSpec
    columns: tuple[str, ...]


def bind_inputs(signature: Signature, schema: pa.Schema, mapping: Mapping[str, str],
                key: str | None) -> list[Binding]:
    """Decide, once per file, which columns feed each model input. BatchError says what is missing."""
    names = list(schema.names)
    unknown = [m for m in mapping if signature.input(m) is None]
    if unknown:
        raise BatchError(f"--map names {', '.join(map(repr, unknown))}, which the model does not take; "
                         f"its inputs are {', '.join(map(repr, signature.input_names()))}")
    wanted = [c for value in mapping.values() for c in value.split(",")]
    absent = [c for c in (*wanted, *([key] if key else [])) if c not in names]
    if absent:
        raise BatchError(f"no column {', '.join(map(repr, absent))} in the input; its columns are {_list(names)}")
    return [_bind(spec, schema, mapping, key, len(signature.inputs)) for spec in signature.inputs]


def _bind(spec: TensorSpec, schema: pa.Schema, mapping: Mapping[str, str], key: str | None,
          inputs: int) -> Binding:
    if spec.name in mapping:
        return Binding(spec, tuple(mapping[spec.name].split(",")))
    if spec.name in schema.names:
        return Binding(spec, (spec.name,))
    if inputs > 1:
        raise BatchError(f"no column for model input {spec.name!r}; the input's columns are {_list(schema.names)}; "
                         f"name one with --map {spec.name}=COLUMN")
    features = tuple(n for n in schema.names if n != key)
    if len(features) == 1 and _is_list(schema.field(features[0]).type):
        return Binding(spec, features)
    width = spec.shape[1] if len(spec.shape) == 2 else None
    if width is None or (width != FREE and width != len(features)):
        wants = f"{width} values per row" if width not in (None, FREE) else f"shape {list(spec.shape)}"
        raise BatchError(f"model input {spec.name!r} takes {wants}; the input has {len(features)} feature "
                         f"column(s) ({_list(features)}) and no column named {spec.name!r}")
    return Binding(spec, features)


def to_arrays(bindings: Sequence[Binding], table: pa.Table) -> dict[str, np.ndarray]:
    """The model inputs for the rows of ``table``; INVALID_ARGUMENT naming the input when a value does not fit."""
    return {b.spec.name: _array(b, table) for b in bindings}


def _array(binding: Binding, table: pa.Table) -> np.ndarray:
    spec = binding.spec
    rows = table.num_rows
    if len(binding.columns) > 1 or (len(spec.shape) == 2 and not _is_list(table.column(binding.columns[0]).type)):
        if spec.datatype == "BYTES":
            raise invalid(f"model input {spec.name!r} is BYTES: it takes one text column, not several")
        out = np.empty((rows, len(binding.columns)), dtype=numpy_dtype(spec.datatype))
        for j, name in enumerate(binding.columns):
            out[:, j] = _column(spec, name, table.column(name))
        return out
    column = table.column(binding.columns[0])
    if _is_list(column.type):
        return _from_list(spec, binding.columns[0], column, rows)
    return _column(spec, binding.columns[0], column)


def _column(spec: TensorSpec, name: str, column: Any) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    if column.null_count:
        raise invalid(f"column {name!r} (model input {spec.name!r}) has a missing value")
    if spec.datatype == "BYTES":
        values = column.to_pylist()
        out = np.empty(len(values), dtype=object)
        out[:] = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values]
        return out
    dtype = numpy_dtype(spec.datatype)
    target = pa.from_numpy_dtype(np.float32 if spec.datatype == "BF16" else dtype)
    if isinstance(column, pa.ChunkedArray) and column.num_chunks == 1:
        column = column.chunk(0)  # an Array's to_numpy is a view; a ChunkedArray's always copies
    if column.type == target:
        array: np.ndarray = column.to_numpy()
    else:
        try:
            array = pc.cast(column, target).to_numpy()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise invalid(f"column {name!r} does not fit model input {spec.name!r} ({spec.datatype}): {exc}") from None
    with np.errstate(over="ignore"):  # a value too large for the datatype becomes inf: check_finite words it
        array = array.astype(dtype, copy=False)
    if dtype.kind in "fV" and not np.isfinite(array).all():  # the same check as values read from JSON
        check_finite(spec.name, spec.datatype, array, _as_float64(column))
    return array


def _as_float64(column: Any) -> np.ndarray:
    """A numeric or text column's values as float64 (a text value too large for it is inf)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        wide: np.ndarray = pc.cast(column, pa.float64()).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        wide = np.asarray([float(v) for v in column.to_pylist()], dtype=np.float64)
    return wide


def _from_list(spec: TensorSpec, name: str, column: Any, rows: int) -> np.ndarray:
    import pyarrow.compute as pc

    if column.null_count:
        raise invalid(f"column {name!r} (model input {spec.name!r}) has a missing value")
    values = column
    while _is_list(values.type):
        values = pc.list_flatten(values)
    flat = _column(spec, name, values)
    inner = [d if d != FREE else -1 for d in spec.shape[1:]]
    if inner.count(-1) > 1 or (rows and flat.size % rows):
        raise invalid(f"column {name!r}: lists of unequal length for model input {spec.name!r}")
    try:
        return flat.reshape((rows, *inner)) if rows else flat.reshape((0, *[max(d, 0) for d in inner]))
    except ValueError:
        per_row = flat.size // rows if rows else 0
        raise invalid(f"column {name!r} has {per_row} values per row; model input {spec.name!r} takes shape "
                      f"{list(spec.shape)}") from None


def output_names(signature: Signature, input_columns: Sequence[str], join: bool) -> dict[str, str]:
    """Model output -> column name. With join, an output named like an input column gets ``_prediction``."""
    taken = set(input_columns) if join else set()
    return {s.name: f"{s.name}_prediction" if s.name in taken else s.name for s in signature.outputs}


def output_schema(signature: Signature, input_schema: pa.Schema, join: bool, key: str | None) -> pa.Schema:
    """The columns of the output: the input columns (join) or the key, then one column per model output."""
    import pyarrow as pa

    fields = list(input_schema) if join else ([input_schema.field(key)] if key else [])
    names = output_names(signature, input_schema.names, join)
    fields += [pa.field(names[s.name], _arrow_type(s)) for s in signature.outputs]
    return pa.schema(fields)


def _arrow_type(spec: TensorSpec) -> pa.DataType:
    import pyarrow as pa

    if spec.datatype == "BYTES":
        kind: pa.DataType = pa.string()
    elif spec.datatype == "BF16":
        kind = pa.float32()
    else:
        kind = pa.from_numpy_dtype(numpy_dtype(spec.datatype))
    for size in reversed(spec.shape[1:]):
        kind = pa.list_(kind) if size == FREE else pa.list_(kind, size)
    return kind


def to_output_table(schema: pa.Schema, table: pa.Table, outputs: Mapping[str, np.ndarray],
                    signature: Signature, join: bool, key: str | None) -> pa.Table:
    """The output rows for ``table`` and the model's ``outputs`` for it, in ``schema``."""
    import pyarrow as pa

    carried = list(table.columns) if join else ([table.column(key)] if key else [])
    columns = carried + [_output_array(outputs[s.name], schema.field(len(carried) + i).type)
                         for i, s in enumerate(signature.outputs)]
    return pa.Table.from_arrays(columns, schema=schema)


def _output_array(array: np.ndarray, kind: pa.DataType) -> pa.Array:
    import pyarrow as pa

    if pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind):
        rows = array.shape[0]
        inner = array.reshape(rows * array.shape[1], *array.shape[2:]) if array.ndim > 1 else array
        values = _output_array(inner, kind.value_type)
        if pa.types.is_fixed_size_list(kind):
            return pa.FixedSizeListArray.from_arrays(values, kind.list_size)
        offsets = np.arange(0, (rows + 1) * array.shape[1], array.shape[1], dtype=np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), values)
    if pa.types.is_string(kind):
        return pa.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in array.ravel()],
                        type=kind)
    if array.dtype.kind == "V" or str(array.dtype) == "bfloat16":
        array = array.astype(np.float32)
    return pa.array(np.ascontiguousarray(array), type=kind)


def _is_list(kind: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind))


def _list(names: Sequence[str]) -> str:
    shown = ", ".join(map(repr, names[:20]))
    return shown + (f" and {len(names) - 20} more" if len(names) > 20 else "") if names else "none"
