"""LightGBM boosters saved in LightGBM's own text format, ``model.txt``.

The signature comes from the booster. The input ``input`` is an FP32 matrix as wide as ``num_feature()``.
The outputs depend on the objective written in the model's header (canonical names, whatever alias was used
in training), because the raw prediction means a different thing for each:

- ``binary``: ``label`` (INT64) and ``probabilities`` (FP32, [P(class 0), P(class 1)]), the way a
  scikit-learn classifier answers;
- ``multiclass`` and ``multiclassova``: ``label`` and ``probabilities`` over ``num_class`` columns (one-vs-all
  probabilities are served as LightGBM gives them, without normalising, like ``LGBMClassifier``);
- ``lambdarank`` and ``rank_xendcg``: ``score`` (FP32), a relevance score to sort by;
- anything else (regression objectives, ``cross_entropy``, custom objectives): ``prediction`` (FP32).

Labels are class indices (0, 1, ...): a booster does not store the original class values.

A model file is untrusted input: LightGBM parses its trees in parallel, where a failed check aborts the
whole process instead of raising, and predicts by following the file's child indices unchecked. So the file
is read and checked in Python first (its layout, then every tree: see :mod:`inferd.runtimes.lightgbm_checks`),
and LightGBM loads the very text that was checked.

Predictions are serialised by a lock. LightGBM re-initialises state shared by the whole booster at the start
of every predict call (upstream issue lightgbm-org/LightGBM#6142), so concurrent calls on one booster race;
``num_threads`` sets how many threads each call uses inside LightGBM.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
from lightgbm.basic import LightGBMError

from inferd.runtimes import lightgbm_checks
from inferd.runtimes.base import Inputs, Outputs
from inferd.runtimes.options import LightGBMOptions as Options
from inferd.signature import FREE, Signature, TensorSpec, merge_override

Finish = Callable[[np.ndarray], dict[str, np.ndarray]]
"""Turns the booster's raw 2-D output (rows x columns, float64) into the runtime's named outputs."""

INPUT = "input"
_CLASSIFIERS = {"multiclass", "multiclassova"}
_RANKERS = {"lambdarank", "rank_xendcg"}


@dataclass(frozen=True, slots=True)
class _Task:
    """What the objective makes of the booster's raw output."""

    outputs: tuple[TensorSpec, ...]
    finish: Finish
    width: int
    """Columns of the raw output; an empty batch cannot tell its width."""


class LightGBMRuntime:
    def __init__(self, booster: lgb.Booster, signature: Signature, task: _Task, num_threads: int) -> None:
        self._booster = booster
        self.signature = signature
        self._input = signature.inputs[0].name
        self._task = task
        self._num_threads = num_threads
        self._lock = threading.Lock()

    def predict(self, inputs: Inputs) -> Outputs:
        x = inputs[self._input]
        with self._lock:
            raw = self._booster.predict(x, num_threads=self._num_threads, verbose=-1)
        return self._task.finish(np.asarray(raw).reshape(len(x), self._task.width))

    def close(self) -> None:
        del self._booster


def load(artifact: Path, options: Options, override: Signature | None) -> LightGBMRuntime:
    booster = _read(artifact)
    # Only the header is wanted: one iteration keeps the dump small for a model of many trees.
    header = booster.dump_model(num_iteration=1)
    objective = str(header.get("objective", "")).split(" ")[0]
    task = _task(objective, int(header.get("num_class", 1)))
    declared = Signature((TensorSpec(INPUT, "FP32", (FREE, booster.num_feature())),), task.outputs)
    signature = merge_override(declared, override, str(artifact))
    return LightGBMRuntime(booster, signature, task, options.num_threads)


def _read(artifact: Path) -> lgb.Booster:
    """The booster in the file, once its structure is known to be safe for LightGBM's native code: the bytes
    checked are the bytes loaded, so the file cannot change in between."""
    data = artifact.read_bytes()
    try:
        lightgbm_checks.check(data)
        text = data.decode("utf-8")
    except (lightgbm_checks.ModelStructureError, UnicodeDecodeError) as exc:
        raise ValueError(f"{artifact}: not a valid LightGBM model: {exc}") from None
    try:
        return lgb.Booster(model_str=text)
    except LightGBMError as exc:
        raise ValueError(f"{artifact}: not a valid LightGBM model: {exc}") from exc


def _task(objective: str, num_class: int) -> _Task:
    if objective == "binary":
        return _Task(_classifier_specs(2), _binary, 1)
    if objective in _CLASSIFIERS:
        return _Task(_classifier_specs(num_class), _classified, num_class)
    name = "score" if objective in _RANKERS else "prediction"
    return _Task((TensorSpec(name, "FP32", (FREE,)),), _first_column(name), 1)


def _classifier_specs(num_class: int) -> tuple[TensorSpec, ...]:
    return TensorSpec("label", "INT64", (FREE,)), TensorSpec("probabilities", "FP32", (FREE, num_class))


def _binary(raw: np.ndarray) -> dict[str, np.ndarray]:
    positive = raw[:, 0]
    # 1 - p in float64, before narrowing: in float32 a p close to 1 would leave nothing of P(class 0).
    return _classified(np.stack([1 - positive, positive], axis=1))


def _classified(probabilities: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "label": np.argmax(probabilities, axis=1).astype(np.int64),
        "probabilities": probabilities.astype(np.float32),
    }


def _first_column(name: str) -> Finish:
    return lambda raw: {name: raw[:, 0].astype(np.float32)}
