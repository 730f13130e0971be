"""Model signatures: the inputs and outputs a model takes and gives, and the checks made against them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inferd.errors import internal, invalid
from inferd.tensors import DATATYPES, datatype_of, numpy_dtype

FREE = -1
"""A dimension that may take any size (the batch dimension, a sequence length)."""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One named tensor of a signature: V2 datatype and shape, ``-1`` for a free dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    numpy_dtype: np.dtype[Any] | None = field(init=False, repr=False, compare=False)
    """The numpy dtype of an array already in this datatype (None for BYTES, whose elements need a look)."""

    def __post_init__(self) -> None:
        if self.datatype not in DATATYPES:
            raise ValueError(f"tensor {self.name!r}: unknown datatype {self.datatype!r}")
        if any(d < FREE for d in self.shape):
            raise ValueError(f"tensor {self.name!r}: dimensions must be >= 0 or -1, got {list(self.shape)}")
        object.__setattr__(self, "numpy_dtype", None if self.datatype == "BYTES" else numpy_dtype(self.datatype))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def accepts_shape(self, shape: Sequence[int]) -> bool:
        if len(shape) != len(self.shape):
            return False
        for want, got in zip(self.shape, shape, strict=True):  # noqa: SIM110 - a loop: no generator per request
            if want != got and want != FREE:
                return False
        return True


@dataclass(frozen=True, slots=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    _inputs_by_name: dict[str, TensorSpec] = field(init=False, repr=False, compare=False)
    _batched: bool = field(init=False, repr=False, compare=False)
    output_name_tuple: tuple[str, ...] = field(init=False, repr=False, compare=False)
    """The output names, built once (the request path reads them on every call)."""
    output_datatypes: dict[str, str] = field(init=False, repr=False, compare=False)
    """Each output's datatype by name, built once."""

    def __post_init__(self) -> None:
        for kind, specs in (("input", self.inputs), ("output", self.outputs)):
            names = [s.name for s in specs]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"duplicate {kind} names: {', '.join(duplicates)}")
        object.__setattr__(self, "_inputs_by_name", {s.name: s for s in self.inputs})
        object.__setattr__(self, "output_name_tuple", tuple(s.name for s in self.outputs))
        object.__setattr__(self, "output_datatypes", {s.name: s.datatype for s in self.outputs})
        specs = (*self.inputs, *self.outputs)
        object.__setattr__(self, "_batched", bool(specs) and all(s.shape and s.shape[0] == FREE for s in specs))

    @property
    def batched(self) -> bool:
        """True when every input and output has a free first dimension, which is then the batch axis."""
        return self._batched

    def input(self, name: str) -> TensorSpec | None:
        return self._inputs_by_name.get(name)

    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [s.to_dict() for s in self.inputs], "outputs": [s.to_dict() for s in self.outputs]}


def check_request_input(spec: TensorSpec | None, name: str, datatype: str, shape: Sequence[int],
                        known: Iterable[str]) -> TensorSpec:
    """Check one request input's declared name, datatype and shape against the signature."""
    if spec is None:
        raise invalid(f"unexpected input {name!r}; the model takes {_names(known)}")
    if datatype != spec.datatype:
        raise invalid(f"input {name!r}: expected datatype {spec.datatype}, got {datatype}")
    if not spec.accepts_shape(shape):
        raise invalid(f"input {name!r}: expected shape {_shape(spec.shape)}, got {list(shape)}")
    return spec


def check_all_inputs_present(signature: Signature, given: Iterable[str]) -> None:
    missing = [s.name for s in signature.inputs if s.name not in set(given)]
    if missing:
        raise invalid(f"missing input {_names(missing)}; the model takes {_names(signature.input_names())}")


def check_outputs(signature: Signature, outputs: Mapping[str, Any], batch_size: int | None) -> dict[str, np.ndarray]:
    """Check what a model returned: every declared output present, arrays of the declared rank and, for a
    batched model, as many rows as the request had. Anything wrong is the model's fault: INTERNAL."""
    if type(outputs) is not dict and not isinstance(outputs, Mapping):  # skip the slow ABC check for dicts
        raise internal(f"model returned {type(outputs).__name__}, expected a mapping of output name to array")
    checked: dict[str, np.ndarray] = {}
    for spec in signature.outputs:
        array = outputs.get(spec.name)
        if array is None and spec.name not in outputs:
            raise internal(f"model did not return output {spec.name!r}; it returned {_names(outputs)}")
        if type(array) is not np.ndarray:
            array = np.asarray(array)
        if not spec.accepts_shape(array.shape):
            raise internal(
                f"model output {spec.name!r} has shape {list(array.shape)}, expected {_shape(spec.shape)}"
            )
        if batch_size is not None and array.shape[0] != batch_size:
            raise internal(
                f"model output {spec.name!r} has {array.shape[0]} rows for a batch of {batch_size}"
            )
        checked[spec.name] = array if array.dtype is spec.numpy_dtype else _as_datatype(spec, array)
    return checked


def _as_datatype(spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    if spec.datatype == "BYTES":
        flat = array.ravel()
        if array.dtype == object and all(isinstance(v, bytes) for v in flat):
            return array
        out = np.empty(array.shape, dtype=object)
        out.ravel()[:] = [v if isinstance(v, bytes) else str(v).encode() for v in flat]
        return out
    if datatype_of(array.dtype) == spec.datatype:
        return array
    try:
        return array.astype(numpy_dtype(spec.datatype), casting="same_kind")
    except TypeError:
        raise internal(
            f"model output {spec.name!r} is numpy {array.dtype}, which does not convert to {spec.datatype}"
        ) from None


def merge_override(artifact: Signature, override: Signature | None, where: str) -> Signature:
    """Apply a model.toml signature override to what the artifact declares.

    An override may rename nothing and contradict nothing: same tensor names, same datatypes, same rank,
    and a fixed dimension only where the artifact has the same size or a free one. Tensors the override
    leaves out keep the artifact's spec.
    """
    if override is None:
        return artifact
    inputs = _merge_side("input", artifact.inputs, override.inputs, where)
    outputs = _merge_side("output", artifact.outputs, override.outputs, where)
    return Signature(inputs, outputs)


def _merge_side(kind: str, base: tuple[TensorSpec, ...], over: tuple[TensorSpec, ...],
                where: str) -> tuple[TensorSpec, ...]:
    if not over:
        return base
    if not base:  # the artifact says nothing (python models, TorchScript): the override is the truth
        return over
    by_name = {s.name: s for s in base}
    result = dict(by_name)
    for spec in over:
        have = by_name.get(spec.name)
        if have is None:
            raise ValueError(f"{where}: {kind} {spec.name!r} is not in the model, which has {_names(by_name)}")
        if have.datatype != spec.datatype:
            raise ValueError(
                f"{where}: {kind} {spec.name!r} is {have.datatype} in the model, the override says {spec.datatype}"
            )
        compatible = len(have.shape) == len(spec.shape) and all(
            a in (FREE, o) for a, o in zip(have.shape, spec.shape, strict=True)
        )
        if not compatible:
            raise ValueError(
                f"{where}: {kind} {spec.name!r} has shape {_shape(have.shape)} in the model, "
                f"the override says {_shape(spec.shape)}"
            )
        result[spec.name] = spec
    return tuple(result[s.name] for s in base)


def _names(names: Iterable[str]) -> str:
    listed = [repr(n) for n in names]
    return ", ".join(listed) if listed else "nothing"


def _shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
