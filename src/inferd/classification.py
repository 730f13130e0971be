"""Triton's classification extension: an output asked for with the ``classification`` parameter comes back as its
top classes instead of its values.

A requested output with ``"parameters": {"classification": k}`` (``InferRequestedOutput(name, class_count=k)`` in
``tritonclient``; ``int64_param`` over gRPC) is answered, as Triton answers it, as a BYTES tensor of shape
``[rows, min(k, classes)]`` for a batched model (``[min(k, elements)]`` for one without a batch dimension): per row,
the ``k`` highest values of the output (everything after the batch dimension, flattened), highest first, each as
``"<value>:<index>"``, or ``"<value>:<index>:<label>"`` when the model has a label for that index. A value is
written as Triton's ``std::to_string`` writes it: a floating-point value with six decimals (``0.999241``), an
integer in full. Equal values keep their index order; NaN ranks below every number. ``k`` larger than the number
of classes gives every class (Triton clamps it too); ``0`` asks for the plain output. Only numeric outputs can be
classified: a BOOL or BYTES output is refused before the model runs.

Labels come from a text file in the model folder with one label per line (line ``n`` names class ``n``), named for
each output under ``[labels]`` in ``model.toml``, as Triton's ``label_filename`` names it in ``config.pbtxt``. An
index past the last line, or on an empty line, has no label.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inferd.errors import invalid

if TYPE_CHECKING:
    from inferd.inference import RequestOutput
    from inferd.signature import Signature

PARAMETER = "classification"
"""The requested output's parameter that asks for classes (Triton's name)."""
CLASSIFIABLE = frozenset({"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                          "FP16", "FP32", "FP64", "BF16"})
"""Datatypes whose values rank classes: every numeric one."""

Labels = Mapping[str, Sequence[str]]
"""Each labelled output's labels, by output name."""


@dataclass(frozen=True, slots=True)
class Classes:
    """What one requested output asked for: its ``count`` highest classes, named by ``labels`` where they can be."""

    count: int
    labels: Sequence[str] = ()


def requested_classes(signature: Signature, outputs: Sequence[RequestOutput] | None,
                      labels: Labels) -> dict[str, Classes] | None:
    """The outputs asked for as classes, by name (None when none is); INVALID_ARGUMENT for a count that is not a
    non-negative integer, or an output that has no numeric values to rank."""
    found: dict[str, Classes] | None = None
    for output in outputs or ():
        parameters = output.parameters
        if not parameters or PARAMETER not in parameters:
            continue
        count = parameters[PARAMETER]
        if type(count) is not int or count < 0:
            raise invalid(f"output {output.name!r}: {PARAMETER} must be a non-negative integer (how many classes "
                          f"to return), got {count!r}")
        if count == 0:
            continue  # Triton's "no classification"
        datatype = signature.output_datatypes[output.name]  # requested_outputs checked the name
        if datatype not in CLASSIFIABLE:
            raise invalid(f"output {output.name!r}: {PARAMETER} needs a numeric output to rank, but it is "
                          f"{datatype}")
        if found is None:
            found = {}
        found[output.name] = Classes(count, labels.get(output.name, ()))
    return found


def classify(array: np.ndarray, classes: Classes, batched: bool) -> np.ndarray:
    """The top classes of each row of ``array`` (of the whole array when not ``batched``), as a BYTES array of
    ``"value:index[:label]"`` strings, highest value first."""
    by_row = batched and array.ndim > 0
    rows = array.reshape(array.shape[0], math.prod(array.shape[1:])) if by_row else array.reshape(1, array.size)
    width = rows.shape[1]
    count = min(classes.count, width)
    keys = _ranking_keys(rows)
    # A stable sort of the reversed row, reversed again: highest first, equal values in index order.
    order = (width - 1 - np.argsort(keys[:, ::-1], axis=1, kind="stable")[:, ::-1])[:, :count]
    top = np.take_along_axis(rows, order, axis=1)
    as_text = _formatter(rows.dtype)
    labels = classes.labels
    known = len(labels)
    out = np.empty(order.shape, dtype=object)
    for r in range(order.shape[0]):
        for c, (index, value) in enumerate(zip(order[r].tolist(), top[r].tolist(), strict=True)):
            text = f"{as_text(value)}:{index}"
            label = labels[index] if index < known else ""
            out[r, c] = (f"{text}:{label}" if label else text).encode()
    return out if by_row else out.reshape(count)


def _ranking_keys(rows: np.ndarray) -> np.ndarray:
    """Values that sort as the classes rank: floating-point ones as float64 (FP16, BF16 included) with NaN lowest."""
    if rows.dtype.kind in "iu":
        return rows
    keys = rows.astype(np.float64)
    return np.where(np.isnan(keys), -np.inf, keys)


def _formatter(dtype: np.dtype[Any]) -> Any:
    if dtype.kind in "iu":
        return str
    return _six_decimals


def _six_decimals(value: Any) -> str:
    """C's ``%f`` (what ``std::to_string`` of a float or double gives), which Python's ``f`` format matches."""
    return f"{float(value):f}"


def read_labels(path: Path) -> tuple[str, ...]:
    """One label per line of a UTF-8 text file (a CR before each line end is dropped, as is a last empty line)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return tuple(line.removesuffix("\r") for line in lines)
