"""Handwritten digit classifier: a small MLP on scikit-learn's bundled 8x8 digits, exported to ONNX.

The pipeline scales raw pixel intensities (0-16) itself, so a request is an image exactly as
``load_digits`` holds it: 64 numbers, row by row. Outputs: ``label`` (the digit) and ``probabilities``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, Int64TensorType
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler

from inferd.examples.build import Example

NAME = "digits"
DESCRIPTION = "handwritten digit classifier: an 8x8 image (64 pixels, 0-16) in, digit and probabilities out"
PIXELS = 64
MAX_PIXEL = 16.0
CLASSES = 10
TEST_SIZE = 0.25
SEED = 0
OPSET = 17
TOLERANCE = 1e-4
REQUEST_INDEX = 3
"""Which held-out image the example request shows."""


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The bundled digits as FP32 pixels (0-16), split into train and held-out: x_train, x_test, y_train, y_test."""
    digits = load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=TEST_SIZE, random_state=SEED, stratify=y)
    return x_train, x_test, y_train, y_test


def train(x: np.ndarray, y: np.ndarray) -> Pipeline:
    # Fitted on the pixel range rather than the data, the scaler divides every pixel by 16.
    scaler = MinMaxScaler().fit(np.array([[0.0] * PIXELS, [MAX_PIXEL] * PIXELS], dtype=np.float32))
    # tol=1e-3 stops adam once the loss settles (about 120 epochs, ~97% held-out accuracy), well before max_iter.
    mlp = MLPClassifier(hidden_layer_sizes=(64,), max_iter=300, tol=1e-3, random_state=0)
    mlp.fit(scaler.transform(x), y)
    return Pipeline([("scale", scaler), ("mlp", mlp)])


def to_onnx(model: Pipeline) -> onnx.ModelProto:
    """The pipeline as ONNX with outputs exactly ``label`` INT64 [-1] and ``probabilities`` FP32 [-1, 10]."""
    converted: onnx.ModelProto = convert_sklearn(
        model,
        name=NAME,  # not a random graph name: the same build gives the same bytes
        initial_types=[("input", FloatTensorType([None, PIXELS]))],
        final_types=[("label", Int64TensorType([None])), ("probabilities", FloatTensorType([None, CLASSES]))],
        options={id(model.steps[-1][1]): {"zipmap": False}},
        target_opset=OPSET,
    )
    return converted


def check_onnx(path: Path, model: Pipeline, x: np.ndarray) -> None:
    """Fail the build unless onnxruntime and scikit-learn agree on ``x``."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    if names != ["label", "probabilities"]:
        raise AssertionError(f"{path}: outputs are {names}, expected ['label', 'probabilities']")
    labels, probabilities = session.run(names, {"input": x})
    difference = float(np.abs(probabilities - model.predict_proba(x)).max())
    if difference >= TOLERANCE:
        raise AssertionError(f"{path}: onnxruntime and scikit-learn differ by {difference:.2e}")
    if not np.array_equal(labels, model.predict(x)):
        raise AssertionError(f"{path}: onnxruntime and scikit-learn predict different labels")


def build(model_folder: Path) -> Example:
    x_train, x_test, y_train, y_test = load_split()
    model = train(x_train, y_train)
    artifact = model_folder / "1" / "model.onnx"
    onnx.save_model(to_onnx(model), str(artifact))
    check_onnx(artifact, model, x_test)
    image = x_test[REQUEST_INDEX]
    if model.predict(image[None, :])[0] != y_test[REQUEST_INDEX]:
        raise AssertionError(f"the example image (a {y_test[REQUEST_INDEX]}) is misclassified")
    request: dict[str, list[Any]] = {"input": [image.tolist()]}
    return Example(NAME, DESCRIPTION, request, explain)


def request_label() -> int:
    """The true digit of the example request's image."""
    return int(load_split()[3][REQUEST_INDEX])


def explain(outputs: dict[str, np.ndarray]) -> str:
    """'digit 3 (p=0.99)' for each image, separated by semicolons."""
    labels = np.asarray(outputs["label"]).ravel()
    probabilities = np.asarray(outputs["probabilities"]).reshape(len(labels), -1)
    return "; ".join(f"digit {label} (p={row.max():.2f})" for label, row in zip(labels, probabilities, strict=True))
