"""What ``inferd optimize`` compares: the original model as inferd serves it, the held-out rows fed to it, and
the metric and agreement figures each candidate is judged by."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inferd.runtimes.base import Runtime
from inferd.signature import Signature
from inferd.tools import metrics


class OptimizeError(ValueError):
    """A model, data file or option that optimize cannot work with; the message says why."""


@dataclass
class HeldOut:
    inputs: dict[str, np.ndarray]
    truth: np.ndarray | None
    rows: int


@dataclass
class Original:
    """The model version optimize starts from, loaded by inferd's own runtime for it."""

    name: str
    folder: Path
    version: int
    versions: list[int]
    artifact: Path
    runtime_name: str
    runtime: Runtime
    config: Any
    """Its :class:`~inferd.config.ModelConfig`."""

    def convert(self, target: Path, notes: list[str]) -> Path:
        """The model converted to ONNX at ``target``; OptimizeError with the converter's reason."""
        import onnx

        from inferd.tools.convert import ConversionError, to_onnx

        try:
            model, said = to_onnx(self.runtime_name, self._native(), self.runtime.signature)
        except ConversionError as exc:
            raise OptimizeError(f"cannot convert the {self.runtime_name} model to ONNX: {exc}") from None
        notes.extend(said)
        onnx.save_model(model, str(target))
        return target

    def _native(self) -> Any:
        if self.runtime_name == "xgboost":
            import xgboost

            return xgboost.Booster(model_file=str(self.artifact))  # checked by the runtime's load already
        if self.runtime_name == "lightgbm":
            import lightgbm

            return lightgbm.Booster(model_file=str(self.artifact))
        if self.runtime_name == "sklearn":
            from inferd.runtimes.options import SklearnOptions
            from inferd.runtimes.sklearn import read_estimator

            return read_estimator(self.artifact, SklearnOptions.model_validate(self.config.options))
        raise OptimizeError(f"no ONNX converter for the {self.runtime_name} runtime")

    def load_onnx(self, path: Path) -> Runtime:
        """A candidate, loaded as the server would load it; OptimizeError when its signature differs."""
        from inferd.runtimes.onnx import load
        from inferd.runtimes.options import OnnxOptions

        try:
            runtime = load(path, OnnxOptions(), None)
        except Exception as exc:  # onnxruntime refuses a graph with its own exception types
            raise OptimizeError(f"onnxruntime cannot load it: {type(exc).__name__}: {exc}") from None
        if runtime.signature != self.runtime.signature:
            runtime.close()
            raise OptimizeError(f"its signature {runtime.signature} differs from the model's {self.runtime.signature}")
        return runtime

    def check_writable(self) -> None:
        """An ONNX version must load under the model's model.toml: refused when that names another runtime."""
        config = self.config
        said = [k for k in ("runtime", "artifact") if getattr(config, k) is not None]
        if config.options and self.runtime_name != "onnx":
            said.append("[options]")
        if said:
            raise OptimizeError(f"{self.folder / 'model.toml'} sets {', '.join(said)} for the {self.runtime_name} "
                                "runtime: an ONNX version would not load under it; nothing written")


def load_original(repo: Path, model: str, version: int | None) -> Original:
    from inferd.artifacts import find_versions, resolve_artifact
    from inferd.config import load_model_config
    from inferd.runtimes.registry import load_runtime

    folder = repo / model
    if not folder.is_dir():
        known = sorted(p.name for p in repo.iterdir() if p.is_dir()) if repo.is_dir() else []
        raise OptimizeError(f"no model {model!r} in {repo}; models there: {', '.join(known) or 'none'}")
    try:
        config = load_model_config(folder)
        on_disk = find_versions(folder)
        number = max(on_disk) if version is None else version
        if number not in on_disk:
            raise OptimizeError(f"model {model!r} has no version {number}; versions: {sorted(on_disk)}")
        source = resolve_artifact(number, on_disk[number], config)
        runtime = load_runtime(source.runtime, source.artifact, folder, config.options, config.signature_override())
    except OptimizeError:
        raise
    except Exception as exc:
        raise OptimizeError(f"cannot load model {model!r}: {exc}") from None
    if source.runtime.generative:
        raise OptimizeError(f"model {model!r} is a generative model: optimize works on tensor models")
    return Original(model, folder, number, sorted(on_disk), source.artifact, source.runtime.name, runtime, config)


def read_held_out(data: Path, signature: Signature, labels: str | None, ignore: Sequence[str] = ()) -> HeldOut:
    """The model's inputs from ``data`` (columns bound as ``inferd batch run`` binds them, less ``ignore``d
    columns) and the labels."""
    from inferd.batch.mapping import bind_inputs, to_arrays
    from inferd.batch.options import BatchError
    from inferd.errors import InferError
    from inferd.tools.tables import TableError, column_array, read_table

    try:
        table = read_table(data)
        truth = column_array(table, labels, "labels") if labels else None
    except TableError as exc:
        raise OptimizeError(f"--data {data}: {exc}") from None
    absent = [c for c in ignore if c not in table.schema.names]
    if absent:
        raise OptimizeError(f"--data {data}: no column {', '.join(map(repr, absent))} to ignore; the columns are "
                            f"{', '.join(map(repr, table.schema.names))}")
    features = table.drop_columns([*([labels] if labels else []), *ignore])
    try:
        inputs = to_arrays(bind_inputs(signature, features.schema, {}, None), features)
    except (BatchError, InferError) as exc:
        raise OptimizeError(f"--data {data} does not fit the model: {getattr(exc, 'message', exc)}") from None
    if table.num_rows == 0:
        raise OptimizeError(f"--data {data} has no rows")
    return HeldOut(inputs, truth, table.num_rows)


Score = Callable[[Mapping[str, np.ndarray]], float]


def gate_metric(signature: Signature, held: HeldOut) -> tuple[str, Score]:
    """The gate's metric and how to compute it from a model's outputs: accuracy of ``label`` for a classifier,
    R² of the one numeric output otherwise; against the labels, or (without) against the original's outputs."""
    names = signature.output_names()
    classifier = "label" in names
    output = "label" if classifier else names[0]
    truth = held.truth
    ranking = output == "score"  # relevance grades are not on a score's scale: the gate compares with the original
    if ranking:
        truth = None
    if truth is not None and len(truth) != held.rows:
        raise OptimizeError(f"the labels have {len(truth)} values for {held.rows} rows")
    if truth is not None and not classifier and truth.dtype.kind not in "iufb":
        raise OptimizeError(f"the labels are {truth.dtype}, not numbers: the model's output {output!r} is numeric")
    fixed: list[np.ndarray] = [] if truth is None else [truth]

    def score(outputs: Mapping[str, np.ndarray]) -> float:
        values = np.asarray(outputs[output])
        if not fixed:
            fixed.append(values)  # the first model scored is the original: its outputs are the reference
        if classifier:
            return _accuracy(fixed[0], values)
        return metrics.regression(np.asarray(fixed[0], dtype=np.float64).ravel(), values.ravel())["r2"]

    name = ("accuracy" if classifier else "r2") + (" vs labels" if truth is not None else " vs original")
    if ranking and held.truth is not None:
        name += " (ranking scores; relevance labels are scored by evaluate --task ranking)"
    return name, score


def _accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    if truth.dtype.kind != predicted.dtype.kind and (truth.dtype.kind in "OSU") != (predicted.dtype.kind in "OSU"):
        raise OptimizeError(f"the labels are {truth.dtype} and the model's labels {predicted.dtype}: they differ "
                            "in type")
    t = [v.decode() if isinstance(v, bytes) else v for v in truth.tolist()]
    p = [v.decode() if isinstance(v, bytes) else v for v in predicted.tolist()]
    return float(np.mean([a == b for a, b in zip(t, p, strict=True)]))


def compare(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Max and mean absolute difference over the numeric outputs, and argmax (or label) agreement."""
    found: dict[str, float] = {}
    diffs = [np.abs(np.asarray(reference[n], dtype=np.float64) - np.asarray(candidate[n], dtype=np.float64))
             for n in reference if np.asarray(reference[n]).dtype.kind in "iufb"]
    if diffs:
        flat = np.concatenate([d.ravel() for d in diffs])
        found["max_abs_diff"] = float(flat.max()) if flat.size else 0.0
        found["mean_abs_diff"] = float(flat.mean()) if flat.size else 0.0
    if "probabilities" in reference:
        found["argmax_agreement"] = float(np.mean(np.argmax(reference["probabilities"], axis=1)
                                                  == np.argmax(candidate["probabilities"], axis=1)))
    elif "label" in reference:
        found["argmax_agreement"] = _accuracy(np.asarray(reference["label"]), np.asarray(candidate["label"]))
    return found
