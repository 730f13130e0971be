"""ONNX Runtime's own optimisations of an ONNX file: offline graph optimisation and int8 quantization.

Quantization is offered for neural graphs only (MatMul, Gemm or Conv nodes): a tree ensemble has no weights
to quantize. Dynamic quantization stores int8 weights and quantizes activations per call; static quantization
also fixes the activations' ranges from a calibration sample of the data (QDQ format, ORT's CPU default).
int8 is not always faster on a CPU without VNNI, or for a model this small: the measurements say which.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

NEURAL_OPS = {"MatMul", "Gemm", "Conv"}
CALIBRATION_ROWS = 256


def is_neural(path: Path) -> bool:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type in NEURAL_OPS for node in graph.node)


def graph_optimized(source: Path, target: Path) -> Path:
    """The graph as onnxruntime rewrites it at ``extended`` level (``all`` would write layouts tied to this
    CPU), saved so that a server need not redo it at every load."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    return target


def int8_dynamic(source: Path, target: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    return target


def int8_static(source: Path, target: Path, sample: dict[str, np.ndarray]) -> Path:
    """Static quantization, calibrated on up to :data:`CALIBRATION_ROWS` rows of ``sample``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime is untyped
        def __init__(self) -> None:
            self._rows = _calibration_rows(sample)

        def get_next(self) -> dict[str, Any] | None:
            return next(self._rows, None)

    quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return target


def _calibration_rows(sample: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
    total = min(len(next(iter(sample.values()))), CALIBRATION_ROWS)
    for start in range(0, total, 32):
        yield {name: array[start:min(start + 32, total)] for name, array in sample.items()}
