"""scikit-learn estimators and pipelines, from skops files (safe by default) or, when trusted, pickles.

The signature comes from the estimator: ``n_features_in_`` gives the input width, ``classes_`` and
``predict_proba`` make a classifier's ``label`` and ``probabilities`` outputs, other estimators give
``prediction``. A pipeline that starts with a text vectorizer takes one BYTES input, ``text``.
"""

from __future__ import annotations

import importlib.abc
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from inferd.runtimes.base import Inputs, Outputs
from inferd.runtimes.options import SklearnOptions as Options
from inferd.signature import FREE, Signature, TensorSpec, merge_override
from inferd.tensors import datatype_of

PICKLE_SUFFIXES = (".joblib", ".pkl")


class SklearnRuntime:
    inline_safe = True
    """Cost follows the input size, so short calls may run on the event loop (see executors.threads)."""

    def __init__(self, estimator: Any, signature: Signature) -> None:
        self._estimator = estimator
        self.signature = signature
        self._input = signature.inputs[0].name
        self._text = signature.inputs[0].datatype == "BYTES"
        names = set(signature.output_names())
        self._proba = "probabilities" in names
        self._label = "label" in names

    def predict(self, inputs: Inputs) -> Outputs:
        x: Any = inputs[self._input]
        if self._text:
            x = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in x.ravel()]
        if self._proba:
            proba = self._estimator.predict_proba(x)
            outputs = {"probabilities": proba}
            if self._label:
                outputs["label"] = self._estimator.classes_[np.argmax(proba, axis=1)]
            return outputs
        name = "label" if self._label else "prediction"
        return {name: self._estimator.predict(x)}

    def close(self) -> None:
        self._estimator = None


def load(artifact: Path, options: Options, override: Signature | None) -> SklearnRuntime:
    estimator = _read(artifact, options)
    if not callable(getattr(estimator, "predict", None)):
        raise ValueError(f"{artifact}: holds a {type(estimator).__name__}, which has no predict()")
    declared = Signature(_inputs(estimator, override), _outputs(estimator))
    signature = merge_override(declared, override, str(artifact))
    if not signature.inputs:
        raise ValueError(
            f"{artifact}: cannot tell the input width of {type(estimator).__name__} (no n_features_in_); "
            "declare [[inputs]] in model.toml"
        )
    if len(signature.inputs) != 1:
        raise ValueError(f"{artifact}: a scikit-learn model takes exactly one input tensor")
    return SklearnRuntime(estimator, signature)


def read_estimator(artifact: Path, options: Options) -> Any:
    """The estimator in ``artifact``, read as the runtime reads it (skops trust, pickles only when allowed):
    for tools that need the scikit-learn object itself (``inferd optimize`` converts it to ONNX)."""
    return _read(artifact, options)


def _read(artifact: Path, options: Options) -> Any:
    if artifact.suffix in PICKLE_SUFFIXES:
        if not options.allow_pickle:
            raise PermissionError(
                f"{artifact}: refusing to load a pickle: unpickling runs any code stored in the file. "
                "Save the model with skops (model.skops) instead, or, if you trust this file, "
                "set allow_pickle = true under [options] in model.toml"
            )
        import joblib

        return joblib.load(artifact)
    sio = _skops_io()
    untrusted = [t for t in sio.get_untrusted_types(file=artifact) if t not in set(options.trusted_types)]
    if untrusted:
        raise PermissionError(
            f"{artifact}: the skops file holds types that are not trusted by default: {', '.join(untrusted)}. "
            "If you trust this file, list them under [options] in model.toml: trusted_types = [...]"
        )
    return sio.load(artifact, trusted=list(options.trusted_types) or None)


_IMPORT_LOCK = threading.Lock()


def _skops_io() -> Any:
    """``skops.io``, imported without importing torch.

    Importing skops.io lists scikit-learn's estimators, which walks every scikit-learn package, including
    ``sklearn.externals.array_api_compat.torch``; when torch is installed that imports torch: about 6 s and
    300+ MiB for a server that serves no torch model. The walk skips packages that fail to import, so while
    skops.io is first imported, and only if torch is not loaded already, a finder refuses torch. No estimator
    lives in that package, so skops trusts exactly the same types."""
    if "skops.io" in sys.modules or "torch" in sys.modules:
        import skops.io

        return skops.io
    with _IMPORT_LOCK:
        finder = _RefuseTorch()
        sys.meta_path.insert(0, finder)
        try:
            import skops.io
        finally:
            sys.meta_path.remove(finder)
        return skops.io


class _RefuseTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname == "torch" or fullname.startswith("torch."):
            raise ImportError("torch is not imported while skops.io loads (see inferd.runtimes.sklearn)")
        return None


def _inputs(estimator: Any, override: Signature | None) -> tuple[TensorSpec, ...]:
    given = override.inputs[0] if override and override.inputs else None
    if _starts_with_text_vectorizer(estimator):
        return (TensorSpec(given.name if given else "text", "BYTES", (FREE,)),)
    width = getattr(estimator, "n_features_in_", None)
    if width is None:
        return ()
    # The artifact fixes the width; the wire datatype is the user's choice (FP32 unless model.toml says).
    datatype = given.datatype if given and given.datatype != "BYTES" else "FP32"
    return (TensorSpec(given.name if given else "input", datatype, (FREE, int(width))),)


def _outputs(estimator: Any) -> tuple[TensorSpec, ...]:
    classes = getattr(estimator, "classes_", None)
    if classes is not None:
        label = TensorSpec("label", datatype_of(np.asarray(classes).dtype), (FREE,))
        if callable(getattr(estimator, "predict_proba", None)):
            return label, TensorSpec("probabilities", "FP64", (FREE, len(classes)))
        return (label,)
    n_outputs = getattr(estimator, "n_outputs_", 1)
    shape = (FREE,) if n_outputs == 1 else (FREE, int(n_outputs))
    return (TensorSpec("prediction", "FP64", shape),)


def _starts_with_text_vectorizer(estimator: Any) -> bool:
    first = estimator.steps[0][1] if hasattr(estimator, "steps") else estimator
    return callable(getattr(first, "build_analyzer", None))
