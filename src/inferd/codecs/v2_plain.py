"""The plain V2 request, read and answered in one pass per model version.

Nearly every V2 request over REST has the same form: ``{"inputs": [{"name", "datatype", "shape", "data"}, ...]}``
with numbers for data, maybe an ``id`` and ``outputs`` named without other parameters; or, from ``tritonclient``,
the same with every input's bytes after the JSON header (the binary tensor extension: ``parameters`` holding
only ``binary_data_size``) and outputs asked for as binary data (``binary_data`` or the request's
``binary_data_output``, the only request parameter of the form). The general path takes such a request through
the codecs' objects, the DataPlane's input checks and the response objects: dozens of Python calls that, for a
small model, cost several times the model (counted with ``benchmarks/instructions.py``). A
:class:`PlainRequestPlan`, made once per loaded model version from its signature, checks that form against the
signature with the facts looked up in advance and builds the arrays; :meth:`~PlainRequestPlan.encode` writes the
response in one pass.

The plan only ever *accepts* a request the general path would accept, with the same arrays, and answers it with
the same bytes. Whatever is unusual or wrong (a missing key, an unexpected one, a wrong shape, data numpy cannot
convert, a non-finite JSON value, sizes that do not add up, a row count over the limit) makes
:meth:`~PlainRequestPlan.read` return None, and the general path answers, with its full checks and its exact error
messages. tests/fuzz/test_fuzz_codecs.py holds the two paths to that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson

from inferd.signature import FREE, Signature
from inferd.tensors import json_numbers, to_raw

Arrays = dict[str, np.ndarray]
_COUNT = np.count_nonzero
"""Tells whether all of an array is true at half the cost of a reduction such as ``all()``, for arrays this small."""


_PLAIN_KINDS = frozenset("biuf")
"""numpy kinds whose ``tolist()`` is the V2 JSON form as is (BOOL, integers, FP32 and FP64: not BYTES, FP16 or
BF16, which the general encoder converts or sends as binary data)."""
_SIZE = "binary_data_size"
_BINARY = "binary_data"
_BINARY_OUTPUT = "binary_data_output"


@dataclass(frozen=True, slots=True)
class _Input:
    dtype: np.dtype[Any]
    raw_dtype: np.dtype[Any]
    """The dtype of the binary extension's little-endian layout."""
    datatype: str
    shape: tuple[int, ...]
    """As declared, ``-1`` for a free dimension."""
    floating: bool
    fixed: tuple[tuple[int, int], ...]
    """The index and size of each dimension that is not free."""


@dataclass(slots=True)
class PlainRequest:
    """A plain request, checked and converted (a :class:`~inferd.calls.Prepared`)."""

    arrays: Arrays
    rows: int
    """The batch size (1 for an unbatched model)."""
    id: str | None
    outputs: tuple[tuple[str, str, bool], ...]
    """Name, datatype and whether it goes as binary data, for each output to answer with, in order."""
    key: tuple[object, ...] | None = None
    """The plan's batch key (see :attr:`PlainRequestPlan.batch_key`)."""

    priority = None
    timeout_us = None
    parameters = None
    classes = None
    shared_outputs = None
    """The plain form has no scheduling parameter, nor any other (no classification, no shared memory either)."""

    @property
    def answered(self) -> list[str]:
        return [name for name, _, _ in self.outputs]


class PlainRequestPlan:
    """One model version's plain V2 requests: their inputs checked and converted, their answers encoded."""

    __slots__ = ("_batched", "_datatypes", "_inputs", "_max_batch_size", "_outputs", "batch_key")

    def __init__(self, signature: Signature, max_batch_size: int) -> None:
        self._inputs = {spec.name: _Input(spec.numpy_dtype, spec.numpy_dtype.newbyteorder("<"), spec.datatype,
                                          spec.shape, spec.numpy_dtype.kind == "f",
                                          tuple((i, size) for i, size in enumerate(spec.shape) if size != FREE))
                        for spec in signature.inputs if spec.numpy_dtype is not None}
        self._datatypes = {spec.name: spec.datatype for spec in signature.outputs}
        self._outputs = {flag: tuple((spec.name, spec.datatype, flag) for spec in signature.outputs)
                         for flag in (False, True)}
        self._batched = signature.batched
        self._max_batch_size = max_batch_size
        fixed = all(FREE not in spec.shape[1:] for spec in signature.inputs)
        self.batch_key = tuple((spec.name, spec.numpy_dtype, spec.shape[1:]) for spec in signature.inputs) if fixed \
            else None
        """What the scheduler compares to tell which requests can share a batch (see ``Scheduler.submit``), the
        same for every request when no input has a free dimension after the first; else None."""

    @classmethod
    def for_signature(cls, signature: Signature, max_batch_size: int) -> PlainRequestPlan | None:
        """A plan, or None when no request to this signature has the plain form (a BYTES, FP16 or BF16 input
        or output)."""
        for spec in (*signature.inputs, *signature.outputs):
            if spec.numpy_dtype is None or spec.numpy_dtype.kind not in _PLAIN_KINDS or spec.datatype == "FP16":
                return None
        if not signature.inputs:
            return None
        return cls(signature, max_batch_size)

    def read(self, payload: Any, max_elements: int, tail: memoryview | None = None) -> PlainRequest | None:
        """The request's arrays, rows, id and outputs; None when it is not in the plain form or anything about it
        is wrong (the general path then answers it). ``tail`` is what follows the JSON header (binary inputs);
        None for a body that is all JSON."""
        inputs = payload.get("inputs") if type(payload) is dict else None
        if type(inputs) is not list or len(inputs) != len(self._inputs):
            return None
        request_id = payload.get("id")
        if request_id is not None and type(request_id) is not str:
            return None
        parameters = payload.get("parameters")
        outputs = self._wanted(payload.get("outputs"),
                               False if parameters is None else _flag(parameters, _BINARY_OUTPUT))
        known = 1 + ("id" in payload) + ("outputs" in payload) + ("parameters" in payload)
        if outputs is None or len(payload) != known:
            return None  # another parameter, an odd "outputs", anything else: the general path
        if tail is None:
            arrays = self._json_arrays(inputs, max_elements)
        else:
            arrays = self._raw_arrays(inputs, max_elements, tail)
        if arrays is None:
            return None
        rows = self._rows(arrays)
        return None if rows is None else PlainRequest(arrays, rows, request_id, outputs, self.batch_key)

    def _wanted(self, outputs: Any, binary: bool | None) -> tuple[tuple[str, str, bool], ...] | None:
        """The outputs to answer with: all of them when the request names none, else those it names (with no
        parameter but ``binary_data``), in its order, each once; None for anything else."""
        if binary is None:
            return None
        if outputs is None:
            return self._outputs[binary]
        if type(outputs) is not list or not outputs:
            return None
        wanted: list[tuple[str, str, bool]] = []
        for item in outputs:
            if type(item) is not dict or not (len(item) == 1 or (len(item) == 2 and "parameters" in item)):
                return None
            name = item.get("name")
            parameters = item.get("parameters")
            own = binary if parameters is None else _flag(parameters, _BINARY, binary)
            if type(name) is not str or name not in self._datatypes or own is None:
                return None
            wanted.append((name, self._datatypes[name], own))
        unique = len(wanted) == 1 or len({name for name, _, _ in wanted}) == len(wanted)
        return tuple(wanted) if unique else None

    def _rows(self, arrays: Arrays) -> int | None:
        """The batch size every input agrees on (1 for an unbatched model); None when they disagree or it is
        not between 1 and ``max_batch_size``."""
        if not self._batched:
            return 1
        rows = -1
        for array in arrays.values():
            if rows != array.shape[0] and rows != -1:
                return None
            rows = array.shape[0]
        return rows if 1 <= rows <= self._max_batch_size else None

    def _json_arrays(self, inputs: list[Any], max_elements: int) -> Arrays | None:
        arrays: Arrays = {}
        for item in inputs:
            if type(item) is not dict or len(item) != 4 or "data" not in item:
                return None  # "parameters" (binary data, for one) or a missing key: the general path
            spec, count = self._declared(item, max_elements)
            if spec is None or item["name"] in arrays:
                return None
            array = json_numbers(item["data"], spec.dtype)  # numbers only; else the general path words why
            if array is None or array.size != count or (spec.floating and _COUNT(np.isfinite(array)) != count):
                return None  # a null or an overflow: the general path looks closer
            arrays[item["name"]] = array.reshape(item["shape"])
        return arrays

    def _raw_arrays(self, inputs: list[Any], max_elements: int, tail: memoryview) -> Arrays | None:
        arrays: Arrays = {}
        offset = 0
        for item in inputs:
            parameters = item.get("parameters") if type(item) is dict and len(item) == 4 else None
            size = parameters.get(_SIZE) if type(parameters) is dict and len(parameters) == 1 else None
            spec, count = self._declared(item, max_elements) if type(size) is int else (None, -1)
            if spec is None or item["name"] in arrays or count * spec.dtype.itemsize != size:
                return None
            if offset + size > len(tail):
                return None
            raw = tail[offset:offset + size]
            arrays[item["name"]] = np.frombuffer(raw, dtype=spec.raw_dtype).reshape(item["shape"])
            offset += size
        return arrays if offset == len(tail) else None

    def _declared(self, item: dict[str, Any], max_elements: int) -> tuple[_Input | None, int]:
        """The input's spec and element count when its name, datatype and shape fit the signature."""
        name = item.get("name")
        spec = self._inputs.get(name) if type(name) is str else None
        shape = item.get("shape")
        if spec is None or item.get("datatype") != spec.datatype or type(shape) is not list \
                or len(shape) != len(spec.shape):
            return None, -1
        count = 1
        for got in shape:  # a list of non-negative integers...
            if type(got) is not int or got < 0:
                return None, -1
            count *= got
        for index, want in spec.fixed:  # ...that fits the declared shape
            if shape[index] != want:
                return None, -1
        return (spec, count) if count <= max_elements else (None, -1)

    @staticmethod
    def encode(model_name: str, model_version: str, request: PlainRequest, result: Answer,
               parameters: Mapping[str, Any] | None = None) -> tuple[bytes, int | None]:
        """The response body and, when an output goes as binary data, the JSON header's length: what the general
        encoder writes. ``result`` gives each output's array, or its elements; ``parameters``, the response's."""
        body: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
        if request.id is not None:
            body["id"] = request.id
        if parameters is not None:
            body["parameters"] = parameters
        entries = []
        chunks = []
        for name, datatype, binary in request.outputs:
            if binary:
                array = result.output(name)
                chunks.append(to_raw(array))
                entries.append({"name": name, "datatype": datatype, "shape": list(array.shape),
                                "parameters": {_SIZE: len(chunks[-1])}})
            else:
                shape, data = result.elements(name)
                entries.append({"name": name, "datatype": datatype, "shape": shape, "data": data})
        body["outputs"] = entries
        head = orjson.dumps(body)
        if not chunks:
            return head, None
        return b"".join([head, *chunks]), len(head)


class Answer(Protocol):
    """A request's outputs (a :class:`~inferd.scheduling.scheduler.RunResult`)."""

    def output(self, name: str) -> np.ndarray: ...

    def elements(self, name: str) -> tuple[list[int], list[Any]]:
        """The output's shape and its elements in one flat list."""
        ...


def _flag(parameters: Any, key: str, default: bool = False) -> bool | None:
    """The boolean ``key`` of a parameters object that holds nothing else (``default`` when absent or empty);
    None for anything else."""
    if parameters is None or parameters == {}:
        return default
    if type(parameters) is not dict or len(parameters) != 1:
        return None
    value = parameters.get(key)
    return value if type(value) is bool else None
