"""``inferd optimize``: faster versions of a model, each checked against the original on held-out data.

Candidates: an ONNX conversion of a scikit-learn, XGBoost or LightGBM model (:mod:`inferd.tools.convert`);
for an ONNX model (or the conversion), onnxruntime's offline graph optimisation and, for neural graphs, int8
dynamic and static quantization (:mod:`inferd.tools.quantize`). Pruning: none of these frameworks offers it
for a trained model (XGBoost's ``prune`` updater re-trains; onnxruntime and skl2onnx have none), so none is
tried, and the report says so.

Every candidate, and the original, is run on the same rows and timed in the same run. The gate compares a
metric: with labels, ``evaluate``'s (accuracy for a classifier, R² otherwise) against them; without, the
agreement with the original's own outputs (the original scores 1.0). A candidate passes when its metric is at
most ``max_drop`` below the original's: ``0.5%`` is relative to the original's value, ``0.005`` absolute. The
fastest passing candidate that is faster than the original (by ``objective``) is written as the next version
folder, with ``optimize.json`` beside it; nothing is written otherwise, and the report says why.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from inferd.runtimes.base import Runtime
from inferd.tools.measure import Speed, measure
from inferd.tools.optimize_data import HeldOut, OptimizeError, compare, gate_metric, load_original, read_held_out

OBJECTIVES = ("latency", "throughput")
REPORT_FILE = "optimize.json"


@dataclass
class Candidate:
    name: str
    path: Path | None = None
    size_bytes: int = 0
    speed: Speed | None = None
    agreement: dict[str, float] = field(default_factory=dict)
    metric: float | None = None
    drop: float | None = None
    passed: bool | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        found = {k: v for k, v in asdict(self).items() if k not in ("path", "speed")}
        found["speed"] = self.speed.to_dict() if self.speed else None
        return found


@dataclass
class OptimizeReport:
    model: str
    version: int
    runtime: str
    rows: int
    metric: str
    baseline: float
    allowed_drop: float
    candidates: list[Candidate]
    chosen: str | None = None
    written: Path | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "runtime": self.runtime, "rows": self.rows,
                "metric": self.metric, "baseline": self.baseline, "allowed_drop": self.allowed_drop,
                "candidates": [c.to_dict() for c in self.candidates], "chosen": self.chosen,
                "written": str(self.written) if self.written else None, "notes": self.notes}


def parse_drop(text: str, baseline: float) -> float:
    """``"0.5%"``: that share of ``baseline``; ``"0.005"``: that much, absolute."""
    value = text.strip()
    try:
        number = float(value[:-1]) / 100.0 * abs(baseline) if value.endswith("%") else float(value)
    except ValueError:
        raise OptimizeError(f"--max-accuracy-drop {text!r}: expected a share such as 0.5% or an absolute "
                            "number such as 0.005") from None
    if not np.isfinite(number) or number < 0:
        raise OptimizeError(f"--max-accuracy-drop {text!r}: must be a number >= 0")
    return number


@dataclass(frozen=True, slots=True)
class OptimizeOptions:
    labels: str | None = None
    """Column of the data with the truth (left out of the inputs)."""
    max_drop: str = "0.5%"
    """The gate: ``0.5%`` of the original's metric, or ``0.005`` absolute."""
    version: int | None = None
    """The version to start from; default the newest."""
    write: bool = True
    objective: str = "latency"
    """``latency`` (p50 at batch 1) or ``throughput`` (rows/s at batch 64): what "faster" means."""
    seconds: float = 0.5
    """Timing per candidate and batch size."""
    ignore: Sequence[str] = ()
    """Columns of the data that are not inputs (an id, a group)."""


def optimize(repo: Path, model: str, data: Path, options: OptimizeOptions | None = None) -> OptimizeReport:
    """Try the candidates for ``model`` in ``repo`` on ``data`` and write the best one that passes the gate."""
    options = options or OptimizeOptions()
    objective = options.objective
    if objective not in OBJECTIVES:
        raise OptimizeError(f"unknown objective {objective!r}; choose {' or '.join(OBJECTIVES)}")
    original = load_original(repo, model, options.version)
    held = read_held_out(data, original.runtime.signature, options.labels, options.ignore)
    reference = original.runtime.predict(held.inputs)
    metric_name, score = gate_metric(original.runtime.signature, held)
    baseline = score(reference)
    allowed = parse_drop(options.max_drop, baseline)
    report = OptimizeReport(model, original.version, original.runtime_name, held.rows, metric_name, baseline,
                            allowed, [Candidate("original", original.artifact, original.artifact.stat().st_size)])
    report.notes.append("pruning: none tried (onnxruntime, skl2onnx, XGBoost and LightGBM offer no pruning of a "
                        "trained model)")
    with tempfile.TemporaryDirectory(prefix="inferd-optimize-") as scratch:
        runtimes: dict[str, Runtime] = {"original": original.runtime}
        for candidate, runtime in _candidates(original, held, Path(scratch), report.notes):
            report.candidates.append(candidate)
            if runtime is not None:
                runtimes[candidate.name] = runtime
        for candidate in report.candidates:
            runtime = runtimes.get(candidate.name)
            if runtime is not None:
                _judge(candidate, runtime, held, reference, (score, baseline, allowed), options.seconds)
        _choose(report, objective)
        if report.chosen is not None and options.write:
            report.written = _write(original, report)
        for runtime in runtimes.values():
            runtime.close()
    _honest_int8(report)
    return report


def _candidates(original: Any, held: HeldOut, scratch: Path, notes: list[str]) -> Any:
    """(candidate, its loaded runtime or None when it failed) in order."""
    from inferd.tools import quantize

    onnx_file = original.artifact if original.runtime_name == "onnx" else None
    if onnx_file is None:
        converted = Candidate("onnx")
        try:
            onnx_file = original.convert(scratch / "converted.onnx", converted.notes)
        except OptimizeError as exc:
            converted.error = str(exc)
        yield _loaded(converted, onnx_file, original)
    if onnx_file is None:
        return
    makers: list[tuple[str, Callable[[Path], Path]]] = [
        ("onnx+graph-optimized", lambda t: quantize.graph_optimized(onnx_file, t))]
    if quantize.is_neural(onnx_file):
        makers += [("onnx+int8-dynamic", lambda t: quantize.int8_dynamic(onnx_file, t)),
                   ("onnx+int8-static", lambda t: quantize.int8_static(onnx_file, t, held.inputs))]
    else:
        notes.append("int8 quantization: not tried, the graph has no MatMul, Gemm or Conv (not a neural model)")
    for name, make in makers:
        candidate = Candidate(name)
        try:
            path = make(scratch / f"{name}.onnx")
        except Exception as exc:  # onnxruntime's tools raise anything
            candidate.error = f"{type(exc).__name__}: {exc}"
            path = None
        yield _loaded(candidate, path, original)


def _loaded(candidate: Candidate, path: Path | None, original: Any) -> tuple[Candidate, Runtime | None]:
    if path is None:
        return candidate, None
    candidate.path = path
    candidate.size_bytes = path.stat().st_size
    try:
        return candidate, original.load_onnx(path)
    except OptimizeError as exc:
        candidate.error = str(exc)
        return candidate, None


def _judge(candidate: Candidate, runtime: Runtime, held: HeldOut, reference: Mapping[str, np.ndarray],
           gate: tuple[Callable[[Mapping[str, np.ndarray]], float], float, float], seconds: float) -> None:
    """Outputs compared with the original's, the gate's metric (``gate``: score, baseline, allowed drop), speed."""
    score, baseline, allowed = gate
    outputs = runtime.predict(held.inputs)
    candidate.agreement = compare(reference, outputs)
    candidate.metric = score(outputs)
    candidate.drop = baseline - candidate.metric
    candidate.passed = bool(candidate.drop <= allowed + 1e-12)
    candidate.speed = measure(runtime.predict, held.inputs, seconds=seconds)


def _choose(report: OptimizeReport, objective: str) -> None:
    def key(c: Candidate) -> float:
        assert c.speed is not None
        return c.speed.latency_p50_us if objective == "latency" else -c.speed.throughput_rows_s

    original = report.candidates[0]
    passing = [c for c in report.candidates[1:] if c.passed and c.speed is not None]
    failed = [c.name for c in report.candidates[1:] if c.passed is False]
    if failed:
        report.notes.append(f"failed the gate ({report.metric} drop over {report.allowed_drop:.6g}): "
                            f"{', '.join(failed)}; not written")
    if not passing:
        report.notes.append("no candidate passed the gate: nothing written")
        return
    best = min(passing, key=key)
    if original.speed is not None and key(best) >= key(original):
        report.notes.append(f"no passing candidate is faster than the original by {objective}: nothing written")
        return
    report.chosen = best.name


def _write(original: Any, report: OptimizeReport) -> Path:
    """The chosen candidate as the next version folder (staged under a hidden name, then renamed)."""
    chosen = next(c for c in report.candidates if c.name == report.chosen)
    assert chosen.path is not None
    original.check_writable()
    number = max(original.versions) + 1
    final = original.folder / str(number)
    staging = original.folder / f".optimize-{number}-{os.getpid()}"
    staging.mkdir()
    shutil.copyfile(chosen.path, staging / "model.onnx")
    report.written = final
    (staging / REPORT_FILE).write_bytes(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2))
    staging.rename(final)
    return Path(final)


def _honest_int8(report: OptimizeReport) -> None:
    by_name = {c.name: c for c in report.candidates}
    fp32 = by_name.get("onnx+graph-optimized")
    for name in ("onnx+int8-dynamic", "onnx+int8-static"):
        int8 = by_name.get(name)
        if fp32 and int8 and fp32.speed and int8.speed and int8.speed.latency_p50_us > fp32.speed.latency_p50_us:
            report.notes.append(f"{name} is slower than fp32 on this CPU at batch 1 ({int8.speed.latency_p50_us:.1f} "
                                f"us against {fp32.speed.latency_p50_us:.1f} us)")
