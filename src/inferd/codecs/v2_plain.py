"""The plain V2 JSON request, read and answered in one pass per model version.

Nearly every V2 JSON request has the same form: ``{"inputs": [{"name", "datatype", "shape", "data"}, ...]}``,
maybe an ``id``, numbers for data, and no ``outputs`` or ``parameters``. The general path takes such a request
through the JSON codec's objects, the DataPlane's input checks and the codec's response objects: dozens of
Python calls that, for a small model, cost several times the model (counted with
``benchmarks/instructions.py``). A :class:`PlainJsonPlan`, made once per loaded model version from its
signature, checks that form against the signature with the facts looked up in advance and builds the arrays;
its :meth:`~PlainJsonPlan.encode` writes the response body in one call.

The plan only ever *accepts* a request the general path would accept, with the same arrays. Whatever is
unusual or wrong (a missing key, an unexpected one, a wrong shape, data numpy cannot convert, a non-finite
value, a row count over the limit) makes :meth:`~PlainJsonPlan.read` return None, and the general path answers,
with its full checks and its exact error messages. tests/fuzz/test_fuzz_codecs.py holds the two paths to that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from inferd.signature import FREE, Signature

Arrays = dict[str, np.ndarray]
_ALL = np.logical_and.reduce
"""``ndarray.all`` without its Python wrapper."""

_PLAIN_KINDS = frozenset("biuf")
"""numpy kinds whose ``tolist()`` is the V2 JSON form as is (BOOL, integers, FP32 and FP64: not BYTES, FP16 or
BF16, which the general encoder converts or sends as binary data)."""


@dataclass(frozen=True, slots=True)
class _Input:
    dtype: np.dtype[Any]
    datatype: str
    shape: tuple[int, ...]
    """As declared, ``-1`` for a free dimension."""
    floating: bool


@dataclass(frozen=True, slots=True)
class PlainRequest:
    """A plain request, checked and converted."""

    arrays: Arrays
    rows: int
    """The batch size (1 for an unbatched model)."""
    id: str | None
    outputs: tuple[tuple[str, str], ...]
    """Name and datatype of each output to answer with, in order."""


class PlainJsonPlan:
    """One model version's plain V2 JSON requests: their inputs checked and converted, their answers encoded."""

    __slots__ = ("_batched", "_datatypes", "_inputs", "_max_batch_size", "_outputs", "batch_key")

    def __init__(self, signature: Signature, max_batch_size: int) -> None:
        self._inputs = {spec.name: _Input(spec.numpy_dtype, spec.datatype, spec.shape, spec.numpy_dtype.kind == "f")
                        for spec in signature.inputs if spec.numpy_dtype is not None and spec.datatype != "FP16"}
        self._outputs = tuple((spec.name, spec.datatype) for spec in signature.outputs)
        self._datatypes = dict(self._outputs)
        self._batched = signature.batched
        self._max_batch_size = max_batch_size
        fixed = all(FREE not in spec.shape[1:] for spec in signature.inputs)
        self.batch_key = tuple((spec.name, spec.numpy_dtype, spec.shape[1:]) for spec in signature.inputs) if fixed \
            else None
        """What the scheduler compares to tell which requests can share a batch (see ``Scheduler.submit``), the
        same for every request when no input has a free dimension after the first; else None."""

    @classmethod
    def for_signature(cls, signature: Signature, max_batch_size: int) -> PlainJsonPlan | None:
        """A plan, or None when no request to this signature has the plain form (a BYTES, FP16 or BF16 input
        or output)."""
        for spec in (*signature.inputs, *signature.outputs):
            if spec.numpy_dtype is None or spec.numpy_dtype.kind not in _PLAIN_KINDS or spec.datatype == "FP16":
                return None
        if not signature.inputs:
            return None
        return cls(signature, max_batch_size)

    def read(self, payload: Any, max_elements: int) -> PlainRequest | None:
        """The request's arrays, rows, id and wanted outputs; None when it is not in the plain form or anything
        about it is wrong (the general path then answers it)."""
        inputs = payload.get("inputs") if type(payload) is dict else None
        if type(inputs) is not list or len(inputs) != len(self._inputs):
            return None
        request_id = payload.get("id")
        if request_id is not None and type(request_id) is not str:
            return None
        outputs = self._wanted(payload.get("outputs"))
        if outputs is None or len(payload) != 1 + (request_id is not None) + (outputs is not self._outputs):
            return None  # "parameters", an odd "outputs", anything else: the general path
        arrays: Arrays = {}
        for item in inputs:
            array = self._array(item, max_elements)
            if array is None or item["name"] in arrays:
                return None
            arrays[item["name"]] = array
        rows = self._rows(arrays)
        return None if rows is None else PlainRequest(arrays, rows, request_id, outputs)

    def _wanted(self, outputs: Any) -> tuple[tuple[str, str], ...] | None:
        """The outputs to answer with (name and datatype): all of them when the request names none, else those
        it names as ``{"name": ...}`` alone, in its order, each once; None for anything else."""
        if outputs is None:
            return self._outputs
        if type(outputs) is not list or not outputs:
            return None
        wanted: list[tuple[str, str]] = []
        for item in outputs:
            name = item.get("name") if type(item) is dict and len(item) == 1 else None
            if type(name) is not str or name not in self._datatypes:
                return None
            wanted.append((name, self._datatypes[name]))
        return tuple(wanted) if len({name for name, _ in wanted}) == len(wanted) else None

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

    def _array(self, item: Any, max_elements: int) -> np.ndarray | None:
        if type(item) is not dict or len(item) != 4 or "data" not in item:
            return None  # "parameters" (binary data, for one) or a missing key: the general path
        name = item.get("name")
        spec = self._inputs.get(name) if type(name) is str else None
        shape = item.get("shape")
        count = _count(spec.shape, shape) if spec is not None and item.get("datatype") == spec.datatype else -1
        if count < 0 or count > max_elements:
            return None
        assert spec is not None
        try:
            array = np.asarray(item["data"], dtype=spec.dtype)
        except Exception:  # whatever numpy refuses, the general path words the error
            return None
        if array.size != count or (spec.floating and not _ALL(np.isfinite(array), None)):
            return None  # a null or an overflow: the general path looks closer
        return array.reshape(shape)

    @staticmethod
    def encode(model_name: str, model_version: str, request: PlainRequest, output: Callable[[str], np.ndarray],
               ) -> bytes:
        """The V2 JSON response body, as the general encoder writes it; ``output`` gives each output's array."""
        body: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
        if request.id is not None:
            body["id"] = request.id
        body["outputs"] = [
            {"name": name, "datatype": datatype, "shape": list(array.shape), "data": array.ravel().tolist()}
            for name, datatype in request.outputs
            for array in (output(name),)
        ]
        return orjson.dumps(body)

def _count(declared: tuple[int, ...], shape: Any) -> int:
    """Elements of ``shape`` when it is a list of non-negative integers that fits ``declared``; else -1."""
    if type(shape) is not list or len(shape) != len(declared):
        return -1
    count = 1
    for want, got in zip(declared, shape, strict=True):
        if type(got) is not int or got < 0 or (want != got and want != FREE):
            return -1
        count *= got
    return count
