"""XGBoost boosters saved in XGBoost's own formats, ``model.json`` or ``model.ubj``. Pickles are never read.

The signature comes from the booster. The input ``input`` is an FP32 matrix as wide as ``num_features()``.
The outputs depend on the objective in the booster's saved config, because the raw prediction means a
different thing for each:

- ``binary:logistic``: ``label`` (INT64) and ``probabilities`` (FP32, [P(class 0), P(class 1)]), the way a
  scikit-learn classifier answers;
- ``multi:softprob`` and ``multi:softmax``: ``label`` and ``probabilities`` over ``num_class`` columns. A
  softmax booster predicts only the class, so the runtime asks for margins and applies the softmax itself,
  as ``XGBClassifier.predict_proba`` does;
- ``rank:*``: ``score`` (FP32), a relevance score to sort by;
- anything else (``reg:*``, ``count:*``, ``survival:*``, ``binary:logitraw``, ...): ``prediction`` (FP32).

A booster with several targets (multi-output regression, quantile regression with several alphas,
multi-label classification) gives ``prediction`` with one column per target, whatever its objective.

Labels are class indices (0, 1, ...): a booster does not store the original class values.

A model file is untrusted input, and XGBoost's native code crashes the process on damaged ones instead of
raising: its UBJSON reader on most truncated files, its predictor on a tree whose child or feature indices
are out of range. So the file is read and its structure checked in Python first (truncation, then every
tree, see :mod:`inferd.runtimes.xgboost_checks`), and XGBoost loads the very bytes that were checked.

Tree boosters predict with ``inplace_predict``: no DMatrix, and lock-free and thread-safe. When the model was
trained with early stopping, only the trees up to ``best_iteration`` are used, which is what XGBoost's
scikit-learn wrappers predict with. Linear boosters (``gblinear``) cannot predict in place; they go through a
DMatrix under a lock, because their ``predict`` is not thread-safe.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb
from xgboost.core import XGBoostError

from inferd.runtimes import xgboost_checks
from inferd.runtimes.base import Inputs, Outputs
from inferd.runtimes.options import XGBoostOptions as Options
from inferd.signature import FREE, Signature, TensorSpec, merge_override

Finish = Callable[[np.ndarray], dict[str, np.ndarray]]
"""Turns the booster's raw 2-D output (rows x columns) into the runtime's named outputs."""

INPUT = "input"


@dataclass(frozen=True, slots=True)
class _Task:
    """What the objective makes of the booster's raw output."""

    outputs: tuple[TensorSpec, ...]
    finish: Finish
    width: int
    """Columns of the raw output: the booster flattens it, and an empty batch cannot tell its width."""
    margin: bool = False
    """Predict untransformed margins instead of the objective's values."""


class XGBoostRuntime:
    def __init__(self, signature: Signature, raw: Callable[[np.ndarray], np.ndarray], task: _Task,
                 inline_safe: bool) -> None:
        self.signature = signature
        self.inline_safe = inline_safe
        """Lock-free tree prediction costs what its input size says, so short calls may run on the event
        loop; gblinear predicts under a lock, which the event loop must never wait on."""
        self._input = signature.inputs[0].name
        self._raw = raw
        self._task = task

    def predict(self, inputs: Inputs) -> Outputs:
        x = inputs[self._input]
        return self._task.finish(self._raw(x).reshape(len(x), self._task.width))

    def close(self) -> None:
        del self._raw  # the only reference to the booster


def load(artifact: Path, options: Options, override: Signature | None) -> XGBoostRuntime:
    booster = _read(artifact)
    booster.set_param({"nthread": options.nthread})
    learner = json.loads(booster.save_config())["learner"]
    objective: str = learner["objective"]["name"]
    model_param = learner["learner_model_param"]
    num_class = int(model_param.get("num_class", 0))
    num_target = int(model_param.get("num_target", 1))
    task = _task(objective, num_class, num_target)
    declared = Signature((TensorSpec(INPUT, "FP32", (FREE, booster.num_features())),), task.outputs)
    signature = merge_override(declared, override, str(artifact))
    linear = learner["gradient_booster"]["name"] == "gblinear"
    raw = _linear_predictor(booster, task.margin, options.nthread) if linear else _tree_predictor(booster, task.margin)
    return XGBoostRuntime(signature, raw, task, inline_safe=not linear)


def _read(artifact: Path) -> xgb.Booster:
    """The booster in the file, once its structure is known to be safe for XGBoost's native code: the bytes
    checked are the bytes loaded, so the file cannot change in between."""
    data = artifact.read_bytes()
    if _cut_short(data):
        raise ValueError(f"{artifact}: not a valid XGBoost model: the file is truncated (it does not end with '}}')")
    try:
        xgboost_checks.check(xgboost_checks.parse(data, binary=artifact.suffix == ".ubj"))
    except xgboost_checks.ModelStructureError as exc:
        raise ValueError(f"{artifact}: not a valid XGBoost model: {exc}") from None
    try:
        return xgb.Booster(model_file=bytearray(data))
    except XGBoostError as exc:
        # The library's message carries a native stack trace; its first line says what was wrong.
        first_line = str(exc).strip().partition("\n")[0]
        raise ValueError(f"{artifact}: not a valid XGBoost model: {first_line}") from exc


def _cut_short(data: bytes) -> bool:
    """Whether the file stops before its closing brace: both formats hold one object, ``{`` to ``}``."""
    return not data[-64:].rstrip().endswith(b"}")


def _task(objective: str, num_class: int, num_target: int) -> _Task:
    if num_target > 1:
        return _Task((TensorSpec("prediction", "FP32", (FREE, num_target)),), _as_is("prediction"), num_target)
    if objective == "binary:logistic":
        return _Task(_classifier_specs(2), _binary, 1)
    if objective == "multi:softprob":
        return _Task(_classifier_specs(num_class), _classified, num_class)
    if objective == "multi:softmax":
        return _Task(_classifier_specs(num_class), _softmax, num_class, margin=True)
    name = "score" if objective.startswith("rank:") else "prediction"
    return _Task((TensorSpec(name, "FP32", (FREE,)),), _first_column(name), 1)


def _classifier_specs(num_class: int) -> tuple[TensorSpec, ...]:
    return TensorSpec("label", "INT64", (FREE,)), TensorSpec("probabilities", "FP32", (FREE, num_class))


def _tree_predictor(booster: xgb.Booster, margin: bool) -> Callable[[np.ndarray], np.ndarray]:
    best = booster.attr("best_iteration")
    iteration_range = (0, int(best) + 1) if best is not None else (0, 0)
    predict_type = "margin" if margin else "value"

    def raw(x: np.ndarray) -> np.ndarray:
        # A plain matrix is matched to the booster's features by position, names or not; the server has
        # already checked its width.
        result = booster.inplace_predict(
            x, iteration_range=iteration_range, predict_type=predict_type, validate_features=False
        )
        return np.asarray(result)

    return raw


def _linear_predictor(booster: xgb.Booster, margin: bool, nthread: int) -> Callable[[np.ndarray], np.ndarray]:
    lock = threading.Lock()
    names: Any = booster.feature_names
    types: Any = booster.feature_types

    def raw(x: np.ndarray) -> np.ndarray:
        # The booster refuses a DMatrix without its feature names, if it has some.
        matrix = xgb.DMatrix(x, feature_names=names, feature_types=types, nthread=nthread)
        with lock:
            return np.asarray(booster.predict(matrix, output_margin=margin))

    return raw


def _binary(raw: np.ndarray) -> dict[str, np.ndarray]:
    positive = raw[:, 0]
    return _classified(np.stack([1 - positive, positive], axis=1))


def _softmax(margins: np.ndarray) -> dict[str, np.ndarray]:
    exp = np.exp(margins - margins.max(axis=1, keepdims=True))
    return _classified(exp / exp.sum(axis=1, keepdims=True))


def _classified(probabilities: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "label": np.argmax(probabilities, axis=1).astype(np.int64),
        "probabilities": probabilities.astype(np.float32, copy=False),
    }


def _first_column(name: str) -> Finish:
    return lambda raw: {name: raw[:, 0].astype(np.float32, copy=False)}


def _as_is(name: str) -> Finish:
    return lambda raw: {name: raw.astype(np.float32, copy=False)}
