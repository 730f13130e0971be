"""Checks shared by the gradient-boosting runtime tests (xgboost, lightgbm): same contract, same asserts."""

from __future__ import annotations

from typing import Any

import numpy as np

from inferd.runtimes.base import Runtime
from inferd.signature import Signature, TensorSpec


def predict(runtime: Runtime, x: np.ndarray) -> dict[str, np.ndarray]:
    outputs = dict(runtime.predict({"input": x}))
    assert all(isinstance(a, np.ndarray) for a in outputs.values())
    return outputs


def assert_classifier(runtime: Runtime, model: Any, num_class: int, x: np.ndarray) -> None:
    assert runtime.signature == Signature(
        (TensorSpec("input", "FP32", (-1, x.shape[1])),),
        (TensorSpec("label", "INT64", (-1,)), TensorSpec("probabilities", "FP32", (-1, num_class))),
    )
    outputs = predict(runtime, x)
    assert outputs["label"].dtype == np.int64
    assert outputs["probabilities"].dtype == np.float32
    assert outputs["probabilities"].shape == (len(x), num_class)
    np.testing.assert_array_equal(outputs["label"], model.predict(x))
    np.testing.assert_allclose(outputs["probabilities"], model.predict_proba(x), rtol=1e-5)


def assert_single(runtime: Runtime, name: str, expected: np.ndarray, x: np.ndarray) -> None:
    assert runtime.signature == Signature((TensorSpec("input", "FP32", (-1, x.shape[1])),),
                                          (TensorSpec(name, "FP32", (-1,)),))
    outputs = predict(runtime, x)
    assert outputs[name].dtype == np.float32
    assert outputs[name].shape == (len(x),)
    np.testing.assert_allclose(outputs[name], expected, rtol=1e-5)
