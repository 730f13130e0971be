"""PyTorch models on CPU: torch.export archives (``model.pt2``) and TorchScript archives (``model.pt``).

Which loader runs depends on the file's suffix: ``.pt2`` is a torch.export archive (written by
``torch.export.save``), anything else is TorchScript (written by ``torch.jit.save``). A pickled module or a
``state_dict`` from ``torch.save`` cannot be served: it holds no code to run.

What the signature is derived from, and why:

* torch.export records every user input and output of the traced graph as a fake tensor with dtype and shape,
  so the signature comes from the archive. Input names are the graph's user input names (the ``forward``
  argument names, with nested arguments flattened to ``xs_0``, ``xs_1``...); dimensions exported as dynamic
  (``torch.export.Dim``) are symbolic and become -1. Outputs are named after the keys when ``forward`` returns
  a flat dict of tensors, ``output_0``, ``output_1``... otherwise; a model.toml that lists exactly as many
  outputs under other names renames them in order.
* TorchScript archives keep code and weights but no reliable shapes or dtypes (a traced module saw one
  example; a scripted one has ``Tensor`` annotations only), so the signature must come from ``[[inputs]]`` and
  ``[[outputs]]`` in model.toml.

``predict`` passes the inputs positionally in signature order (torch.export: rebuilt into the nesting the
model was exported with) under ``torch.inference_mode()``. A TorchScript module may return a tensor, a tuple
or list of tensors (matched to the outputs in order) or a dict of tensors (matched by name).

TorchScript archives hold code that runs inside the server: serve only files you trust.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import torch
from torch.export.graph_signature import InputKind, OutputKind, TensorArgument
from torch.utils import _pytree as pytree

from inferd.errors import internal
from inferd.runtimes.base import Inputs, Outputs
from inferd.runtimes.options import TorchOptions as Options
from inferd.signature import FREE, Signature, TensorSpec, merge_override

_DATATYPE_BY_TORCH: dict[torch.dtype, str] = {
    torch.bool: "BOOL",
    torch.uint8: "UINT8",
    torch.int8: "INT8",
    torch.int16: "INT16",
    torch.int32: "INT32",
    torch.int64: "INT64",
    torch.float16: "FP16",
    torch.bfloat16: "BF16",
    torch.float32: "FP32",
    torch.float64: "FP64",
}
SUPPORTED_DATATYPES = frozenset(_DATATYPE_BY_TORCH.values())
EXPORT_SUFFIX = ".pt2"

EXPORT = "torch.export"
TORCHSCRIPT = "TorchScript"
CHECKPOINT = "torch.save"
_HINTS = {
    EXPORT: "name it model.pt2",
    TORCHSCRIPT: "name it model.pt",
    CHECKPOINT: "a checkpoint or state_dict holds no code to run: save the model with torch.export.save "
                "(model.pt2) or torch.jit.save (model.pt)",
}


class TorchRuntime:
    """A loaded torch module; ``predict`` is safe to call from several threads at once."""

    def __init__(self, module: Callable[..., Any], signature: Signature,
                 in_spec: pytree.TreeSpec | None) -> None:
        self._module = module
        self.signature = signature
        self._in_spec = in_spec  # torch.export: how flat inputs nest into (args, kwargs); None: TorchScript
        self._input_names = signature.input_names()
        self._output_names = signature.output_names()

    def predict(self, inputs: Inputs) -> Outputs:
        tensors = [_to_tensor(inputs[name]) for name in self._input_names]
        with torch.inference_mode():
            result = self._call(tensors)
            returned = self._result_tensors(result)
        return {name: _to_numpy(name, value)
                for name, value in zip(self._output_names, returned, strict=True)}

    def close(self) -> None:
        del self._module

    def _call(self, tensors: list[torch.Tensor]) -> Any:
        if self._in_spec is None:
            return self._module(*tensors)
        args, kwargs = pytree.tree_unflatten(tensors, self._in_spec)
        return self._module(*args, **kwargs)

    def _result_tensors(self, result: Any) -> list[Any]:
        """The returned values in signature output order."""
        if self._in_spec is None and isinstance(result, Mapping):
            missing = [n for n in self._output_names if n not in result]
            if missing:
                raise internal(
                    f"model returned a dict without {_listed(missing)}; its keys are {_listed(result)}"
                )
            return [result[n] for n in self._output_names]
        # A tuple or list, in order; torch.export declared its outputs in this flattening order (dicts too).
        leaves = pytree.tree_leaves(result)
        if len(leaves) != len(self._output_names):
            raise internal(
                f"model returned {len(leaves)} values, the signature has {len(self._output_names)} outputs "
                f"({_listed(self._output_names)})"
            )
        return leaves


def load(artifact: Path, options: Options, override: Signature | None) -> TorchRuntime:
    if options.num_threads > 0:
        torch.set_num_threads(options.num_threads)
    if artifact.suffix == EXPORT_SUFFIX:
        return _load_export(artifact, override)
    return _load_torchscript(artifact, override)


def _load_export(artifact: Path, override: Signature | None) -> TorchRuntime:
    _check_archive(artifact, EXPORT)
    try:
        program = torch.export.load(artifact)
    except Exception as exc:
        raise ValueError(
            f"{artifact}: not a {EXPORT} archive (torch.export.save): {_first_line(exc)}"
        ) from exc
    declared = _export_signature(program, str(artifact))
    if override is not None:
        declared = Signature(declared.inputs, _renamed_outputs(declared.outputs, override.outputs))
    signature = _checked(merge_override(declared, override, str(artifact)), str(artifact))
    module = program.module()
    _freeze(module)
    return TorchRuntime(module, signature, program.module_call_graph[0].signature.in_spec)


def _load_torchscript(artifact: Path, override: Signature | None) -> TorchRuntime:
    if override is None or not override.inputs or not override.outputs:
        raise ValueError(
            f"{artifact}: a TorchScript archive does not record its tensors' shapes and datatypes; "
            "declare [[inputs]] and [[outputs]] in model.toml (or serve a torch.export archive, model.pt2)"
        )
    _check_archive(artifact, TORCHSCRIPT)
    try:
        with warnings.catch_warnings():
            # torch 2.13 deprecates torch.jit.load in favour of torch.export; TorchScript files still load and
            # run, and the warning must not become an error under -W error. Only this one message is ignored.
            # torch leaves jit.load unannotated, hence the type: ignore.
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated",
                                    category=DeprecationWarning)
            module = torch.jit.load(str(artifact), map_location="cpu")  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise ValueError(
            f"{artifact}: not a {TORCHSCRIPT} archive (torch.jit.save): {_first_line(exc)}"
        ) from exc
    module.eval()  # scripted `if self.training:` branches take the serving path
    _freeze(module)
    signature = _checked(merge_override(Signature((), ()), override, str(artifact)), str(artifact))
    return TorchRuntime(module, signature, None)


def _check_archive(artifact: Path, kind: str) -> None:
    """Refuse a file that is plainly not ``kind`` with a message that says what it is. Checking before torch
    reads it also spares torch.export.load's logged tracebacks."""
    if not artifact.is_file() or not zipfile.is_zipfile(artifact):
        raise ValueError(f"{artifact}: not a {kind} archive: the file is not a zip archive")
    with zipfile.ZipFile(artifact) as archive:
        found = _archive_kind(archive.namelist())
    if found is not None and found != kind:
        raise ValueError(f"{artifact}: not a {kind} archive: it is a {found} file; {_HINTS[found]}")


def _archive_kind(members: list[str]) -> str | None:
    """Which writer made a zip, from marker files inside its top folder; None when none is recognised."""
    files = {member.rpartition("/")[2] for member in members}
    if "archive_format" in files:
        return EXPORT
    if "constants.pkl" in files:
        return TORCHSCRIPT
    if "data.pkl" in files:
        return CHECKPOINT
    return None


def _freeze(module: torch.nn.Module) -> None:
    """Serving never needs gradients. Without this, a TorchScript module that once ran with gradients on
    fails later under inference_mode ("Inference tensors cannot be saved for backward")."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)


def _export_signature(program: torch.export.ExportedProgram, where: str) -> Signature:
    nodes = {node.name: node for node in program.graph.nodes}
    graph_signature = program.graph_signature
    inputs = tuple(
        _node_spec(nodes, spec.arg, spec.arg.name, where, "input")
        for spec in graph_signature.input_specs if spec.kind == InputKind.USER_INPUT
    )
    user_outputs = [spec.arg for spec in graph_signature.output_specs if spec.kind == OutputKind.USER_OUTPUT]
    names = _output_names(program.module_call_graph[0].signature.out_spec, len(user_outputs))
    outputs = tuple(
        _node_spec(nodes, arg, name, where, "output") for arg, name in zip(user_outputs, names, strict=True)
    )
    return Signature(inputs, outputs)


def _node_spec(nodes: Mapping[str, torch.fx.Node], arg: Any, name: str, where: str, kind: str) -> TensorSpec:
    value = nodes[arg.name].meta.get("val") if isinstance(arg, TensorArgument) else None
    if not isinstance(value, torch.Tensor):
        raise ValueError(
            f"{where}: {kind} {name!r} is not a tensor ({arg}); inferd serves models whose inputs and "
            "outputs are all tensors"
        )
    shape = tuple(d if isinstance(d, int) else FREE for d in value.shape)  # symbolic (torch.SymInt): free
    return TensorSpec(name, _datatype(value.dtype, f"{where}: {kind} {name!r}"), shape)


def _output_names(out_spec: pytree.TreeSpec, count: int) -> list[str]:
    """The keys of a flat dict of tensors, else ``output_0``, ``output_1``..."""
    if out_spec.type is dict and out_spec.num_leaves == count:
        keys = list(out_spec.context)
        if len(keys) == count and all(isinstance(k, str) for k in keys):
            return keys
    return [f"output_{i}" for i in range(count)]


def _renamed_outputs(declared: tuple[TensorSpec, ...],
                     wanted: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
    """Let model.toml name outputs the archive numbers: only when it lists them all, in order, and none of its
    names is already the model's. Anything else is left for merge_override to accept or refuse."""
    have = {spec.name for spec in declared}
    if len(wanted) != len(declared) or any(spec.name in have for spec in wanted):
        return declared
    return tuple(TensorSpec(w.name, d.datatype, d.shape) for d, w in zip(declared, wanted, strict=True))


def _checked(signature: Signature, where: str) -> Signature:
    for kind, specs in (("input", signature.inputs), ("output", signature.outputs)):
        for spec in specs:
            if spec.datatype not in SUPPORTED_DATATYPES:
                raise ValueError(
                    f"{where}: {kind} {spec.name!r} is {spec.datatype}; the torch runtime serves "
                    f"{', '.join(sorted(SUPPORTED_DATATYPES))}"
                )
    return signature


def _datatype(dtype: torch.dtype, what: str) -> str:
    found = _DATATYPE_BY_TORCH.get(dtype)
    if found is None:
        raise ValueError(f"{what} has torch dtype {dtype}, which inferd cannot serve")
    return found


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    """Share the array's memory where torch can: it cannot hold read-only memory (from_numpy warns) or
    negative strides (from_numpy raises), so those are copied."""
    if not array.flags.writeable or any(stride < 0 for stride in array.strides):
        array = np.array(array, order="C")
    if array.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(array.view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def _to_numpy(name: str, value: Any) -> np.ndarray:
    if not isinstance(value, torch.Tensor):
        raise internal(f"model output {name!r} is {type(value).__name__}, not a tensor")
    if value.dtype not in _DATATYPE_BY_TORCH:
        raise internal(f"model output {name!r} has torch dtype {value.dtype}, which inferd cannot serve")
    tensor = value.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.uint16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _listed(names: Any) -> str:
    return ", ".join(repr(n) for n in names) or "nothing"
