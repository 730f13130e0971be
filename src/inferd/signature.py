"""Model signatures: the inputs and outputs a model takes and gives, and the checks made against them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
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
    column: bool = field(default=False, repr=False, compare=False)
    """An input of a batched model that takes one value per row (shape ``[-1]``): a request may also give it as
    ``[n, 1]``, the form Triton clients send for it (its configuration says ``dims: [1]`` reshaped to ``[]``), and
    the model still gets ``[n]`` (see :func:`as_declared`). Set by :class:`Signature`."""

    def __post_init__(self) -> None:
        if self.datatype not in DATATYPES:
            raise ValueError(f"tensor {self.name!r}: unknown datatype {self.datatype!r}")
        if any(d < FREE for d in self.shape):
            raise ValueError(f"tensor {self.name!r}: dimensions must be >= 0 or -1, got {list(self.shape)}")
        object.__setattr__(self, "numpy_dtype", None if self.datatype == "BYTES" else numpy_dtype(self.datatype))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def metadata(self) -> dict[str, Any]:
        """The tensor in V2 model metadata: a :attr:`column` input shows the ``[-1, 1]`` form, which is what
        Triton states for it and what its clients read to build a request (perf_analyzer drops the batch
        dimension from this shape and cannot build a tensor from what is left of ``[-1]``)."""
        if self.column:
            return {"name": self.name, "datatype": self.datatype, "shape": [FREE, 1]}
        return self.to_dict()

    def accepts_shape(self, shape: Sequence[int]) -> bool:
        if len(shape) != len(self.shape):
            return self.column and len(shape) == 2 and shape[1] == 1
        for want, got in zip(self.shape, shape, strict=True):  # noqa: SIM110 - a loop: no generator per request
            if want != got and want != FREE:
                return False
        return True


@dataclass(frozen=True, slots=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    may_batch: bool = True
    """False for a model declared without a batch dimension (``max_batch_size = 0`` in model.toml, as in Triton):
    a free first dimension is then the model's own, not rows of a batch."""
    _inputs_by_name: dict[str, TensorSpec] = field(init=False, repr=False, compare=False)
    _batched: bool = field(init=False, repr=False, compare=False)
    output_name_tuple: tuple[str, ...] = field(init=False, repr=False, compare=False)
    """The output names, built once (the request path reads them on every call)."""
    output_datatypes: dict[str, str] = field(init=False, repr=False, compare=False)
    """Each output's datatype by name, built once."""
    column_inputs: tuple[str, ...] = field(init=False, repr=False, compare=False)
    """The names of the inputs marked :attr:`TensorSpec.column` (a batched model's ``[-1]`` inputs)."""

    def __post_init__(self) -> None:
        for kind, specs in (("input", self.inputs), ("output", self.outputs)):
            names = [s.name for s in specs]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"duplicate {kind} names: {', '.join(duplicates)}")
        specs = (*self.inputs, *self.outputs)
        batched = self.may_batch and bool(specs) and all(s.shape and s.shape[0] == FREE for s in specs)
        object.__setattr__(self, "_batched", batched)
        # a spec may come from another signature (an override's merge) or serve as an output: mark it for this one
        object.__setattr__(self, "inputs", tuple(_marked(s, batched and s.shape == (FREE,)) for s in self.inputs))
        object.__setattr__(self, "outputs", tuple(_marked(s, False) for s in self.outputs))
        object.__setattr__(self, "column_inputs", tuple(s.name for s in self.inputs if s.column))
        object.__setattr__(self, "_inputs_by_name", {s.name: s for s in self.inputs})
        object.__setattr__(self, "output_name_tuple", tuple(s.name for s in self.outputs))
        object.__setattr__(self, "output_datatypes", {s.name: s.datatype for s in self.outputs})

    @property
    def batched(self) -> bool:
        """True when every input and output has a free first dimension, which is then the batch axis."""
        return self._batched

    def without_batch(self) -> Signature:
        """The same tensors, none of whose first dimensions is a batch (see :attr:`may_batch`)."""
        return self if not self.may_batch else Signature(self.inputs, self.outputs, may_batch=False)

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
        also = " (or [-1, 1])" if spec.column else ""
        raise invalid(f"input {name!r}: expected shape {_shape(spec.shape)}{also}, got {list(shape)}")
    return spec


def as_declared(column_inputs: tuple[str, ...], inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inputs as the model declares them: each of ``column_inputs`` (:attr:`Signature.column_inputs`) that
    came as ``[n, 1]`` reshaped to ``[n]``. Called where the model's predict is, on the batch it gets."""
    for name in column_inputs:
        array = inputs.get(name)
        if array is not None and array.ndim == 2:
            inputs = {**inputs, name: array.reshape(array.shape[0])}
    return inputs


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


def _marked(spec: TensorSpec, column: bool) -> TensorSpec:
    return spec if spec.column == column else replace(spec, column=column)


def _names(names: Iterable[str]) -> str:
    listed = [repr(n) for n in names]
    return ", ".join(listed) if listed else "nothing"


def _shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
