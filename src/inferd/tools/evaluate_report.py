"""The files of an evaluation: ``evaluation.json``, its plot (confusion matrix or residuals) and ``evaluation.html``."""

from __future__ import annotations

from pathlib import Path

import orjson

from inferd.tools import reports
from inferd.tools.evaluate import Evaluation


def write_report(evaluation: Evaluation, folder: Path, title: str = "inferd evaluate") -> dict[str, Path]:
    """Write the report files into ``folder``; returns them by kind (json, png, html)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {"json": folder / "evaluation.json"}
    options = orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY
    written["json"].write_bytes(orjson.dumps(evaluation.to_dict(), option=options))
    images = []
    if evaluation.task == "classification" and evaluation.confusion:
        images.append(reports.confusion_png(folder / "confusion.png", evaluation.classes, evaluation.confusion,
                                            f"confusion matrix ({evaluation.rows} rows)"))
    elif evaluation.task == "regression" and evaluation.truth is not None and evaluation.predicted is not None:
        images.append(reports.residuals_png(folder / "residuals.png", evaluation.truth, evaluation.predicted,
                                            f"residuals ({evaluation.rows} rows)"))
    if images:
        written["png"] = images[0]
    sections = [("Metrics", reports.table_html(["metric", "value"], sorted(evaluation.metrics.items())))]
    if evaluation.per_class:
        rows = [[c["class"], c["precision"], c["recall"], c["f1"], c["support"]] for c in evaluation.per_class]
        sections.append(("Per class", reports.table_html(["class", "precision", "recall", "F1", "support"], rows)))
    if evaluation.slices:
        names = sorted({m for s in evaluation.slices.values() for m in s["metrics"]})
        rows = [[value, s["rows"], *(s["metrics"].get(m, "") for m in names)] for value, s in evaluation.slices.items()]
        sections.append(("Slices", reports.table_html(["slice", "rows", *names], rows)))
    for note in evaluation.notes:
        sections.append(("Note", f"<p>{note}</p>"))
    written["html"] = reports.write_html(folder / "evaluation.html", f"{title}: {evaluation.task}", sections, images)
    return written
