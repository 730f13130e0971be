"""ONNX models on onnxruntime. The signature comes from the graph; dynamic dimensions become -1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from inferd.runtimes.base import Inputs, Outputs
from inferd.runtimes.options import OnnxOptions as Options
from inferd.signature import Signature, TensorSpec, merge_override

_DATATYPE_BY_ONNX = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(bfloat16)": "BF16",
    "tensor(string)": "BYTES",
}


_OPT_LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


class OnnxRuntime:
    inline_safe = True
    """Cost follows the input size, so short calls may run on the event loop (see executors.threads)."""

    def __init__(self, session: ort.InferenceSession, signature: Signature) -> None:
        self._session = session
        self.signature = signature
        self._output_names = signature.output_names()
        self._string_inputs = {s.name for s in signature.inputs if s.datatype == "BYTES"}
        # The binding under InferenceSession.run: the wrapper re-validates input names (the DataPlane did)
        # and checks for OrtValues and graph capture (never used here), a third of a small model's call.
        core = getattr(session, "_sess", None)
        self._run = core.run if core is not None and hasattr(core, "run") else session.run

    def predict(self, inputs: Inputs) -> Outputs:
        feeds = inputs if not self._string_inputs else {
            name: (_as_str(array) if name in self._string_inputs else array) for name, array in inputs.items()
        }
        results = self._run(self._output_names, feeds, None)
        return dict(zip(self._output_names, results, strict=True))

    def close(self) -> None:
        del self._session


def load(artifact: Path, options: Options, override: Signature | None) -> OnnxRuntime:
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = options.intra_op_threads
    session_options.inter_op_num_threads = options.inter_op_threads
    session_options.graph_optimization_level = _OPT_LEVELS[options.graph_optimization]
    session = ort.InferenceSession(str(artifact), session_options, providers=["CPUExecutionProvider"])
    declared = Signature(
        tuple(_spec(node) for node in session.get_inputs()),
        tuple(_spec(node) for node in session.get_outputs()),
    )
    return OnnxRuntime(session, merge_override(declared, override, str(artifact)))


def _spec(node: Any) -> TensorSpec:
    datatype = _DATATYPE_BY_ONNX.get(node.type)
    if datatype is None:
        raise ValueError(f"ONNX tensor {node.name!r} has type {node.type}, which inferd cannot serve")
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (node.shape or []))
    return TensorSpec(node.name, datatype, shape)


def _as_str(array: np.ndarray) -> np.ndarray:
    """onnxruntime wants str, not bytes, for string tensors."""
    out = np.empty(array.shape, dtype=object)
    out.ravel()[:] = [b.decode("utf-8") if isinstance(b, bytes) else b for b in array.ravel()]
    return out
