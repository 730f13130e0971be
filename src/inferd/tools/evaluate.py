"""``inferd evaluate``: score predictions (a batch job's output, or any table of them) against ground truth.

The labels are a column of the predictions file or a file of their own, matched row by row or, with a key,
joined on it. Classification gives accuracy, per-class precision/recall/F1, a confusion matrix and, from a
probabilities column, ROC AUC and log loss; regression MAE, RMSE and R² (and a residual plot in the report);
ranking NDCG@k within each group. ``--fail-under accuracy=0.95`` turns a score into a CI gate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from inferd.tools import metrics
from inferd.tools.tables import TableError, column_array, read_table

if TYPE_CHECKING:
    import pyarrow as pa

Task = Literal["classification", "regression", "ranking"]
TASKS: tuple[Task, ...] = ("classification", "regression", "ranking")
PREDICTION_COLUMNS = {"classification": ("label", "prediction", "predicted"), "regression": ("prediction", "score"),
                      "ranking": ("score", "prediction")}
TRUTH = "__truth__"


class EvaluateError(ValueError):
    """Predictions and labels that cannot be scored together; the message says why."""


@dataclass(frozen=True, slots=True)
class Columns:
    """Which columns hold what (None: found by name, see :data:`PREDICTION_COLUMNS`)."""

    prediction: str | None = None
    probabilities: str | None = None
    label_column: str | None = None
    """The column of a separate labels file (default: its one column besides the key)."""
    key: str | None = None
    slice_by: str | None = None
    group: str | None = None
    """Ranking: the query column; without it every row is one query."""
    classes: tuple[str, ...] | None = None
    """Classification with text labels: the class of each probabilities column (default: sorted labels)."""


@dataclass
class Evaluation:
    """What :func:`evaluate` found. :meth:`to_dict` is the JSON report."""

    task: Task
    rows: int
    metrics: dict[str, float]
    per_class: list[dict[str, Any]] = field(default_factory=list)
    classes: list[Any] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)
    slices: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    truth: np.ndarray | None = None
    """Regression: the true values and the predictions, for the residual plot (not in the JSON)."""
    predicted: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "rows": self.rows, "metrics": self.metrics, "per_class": self.per_class,
                "classes": self.classes, "confusion": self.confusion, "slices": self.slices, "notes": self.notes}


def evaluate(predictions: Path, labels: str | Path, task: Task, columns: Columns | None = None,
             k: int = 10) -> Evaluation:
    """Score the predictions in ``predictions`` against ``labels`` (a file, or a column of the predictions).
    Raises :class:`EvaluateError` (or :class:`~inferd.tools.tables.TableError`) with the reason."""
    if task not in TASKS:
        raise EvaluateError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    columns = columns or Columns()
    table = _with_truth(read_table(Path(predictions)), labels, columns)
    result = score_table(table, task, columns, k)
    if columns.slice_by is not None:
        import pyarrow as pa

        values = column_array(table, columns.slice_by, "slice").tolist()
        for value in sorted(set(values), key=str):
            part = table.filter(pa.array([v == value for v in values]))
            scored = score_table(part, task, columns, k)
            result.slices[str(value)] = {"rows": scored.rows, "metrics": scored.metrics}
    return result


def score_table(table: pa.Table, task: Task, columns: Columns, k: int = 10) -> Evaluation:
    """Score a table that holds the truth in its :data:`TRUTH` column."""
    truth = column_array(table, TRUTH, "labels")
    name = columns.prediction or _find(table, PREDICTION_COLUMNS[task], "prediction")
    predicted = column_array(table, name, "prediction")
    if task == "regression":
        return score_regression(truth, predicted)
    if task == "ranking":
        groups = column_array(table, columns.group, "group") if columns.group else np.zeros(len(truth))
        return score_ranking(truth, predicted, groups, k, grouped=columns.group is not None)
    probabilities_name = columns.probabilities or (
        "probabilities" if "probabilities" in table.schema.names else None)
    probabilities = column_array(table, probabilities_name, "probabilities") if probabilities_name else None
    return score_classification(truth, predicted, probabilities, columns.classes)


def score_classification(truth: np.ndarray, predicted: np.ndarray, probabilities: np.ndarray | None = None,
                         classes: Sequence[Any] | None = None) -> Evaluation:
    truth, predicted = _same_kind(_class_values(truth, "labels"), _class_values(predicted, "predictions"))
    found = sorted(set(truth.tolist()) | set(predicted.tolist()), key=lambda v: (str(type(v)), v))
    matrix = metrics.confusion(truth, predicted, found)
    scores = metrics.per_class(matrix)
    support = scores["support"]
    result = Evaluation("classification", len(truth), {
        "accuracy": metrics.accuracy(truth, predicted),
        "macro_f1": float(scores["f1"].mean()),
        "weighted_f1": float((scores["f1"] * support).sum() / max(int(support.sum()), 1)),
    })
    result.classes = [_plain(c) for c in found]
    result.confusion = matrix.tolist()
    result.per_class = [
        {"class": _plain(c), "precision": float(scores["precision"][i]), "recall": float(scores["recall"][i]),
         "f1": float(scores["f1"][i]), "support": int(support[i])} for i, c in enumerate(found)]
    if probabilities is not None:
        index = _probability_index(truth, probabilities, classes)
        result.metrics["roc_auc"] = metrics.roc_auc(index, probabilities)
        result.metrics["log_loss"] = metrics.log_loss(index, probabilities)
    return result


def score_regression(truth: np.ndarray, predicted: np.ndarray) -> Evaluation:
    t, p = _numbers(truth, "labels"), _numbers(predicted, "predictions")
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if p.ndim != 1:
        raise EvaluateError(f"regression predictions must be one number per row; they have shape {list(p.shape)}")
    return Evaluation("regression", len(t), metrics.regression(t, p), truth=t, predicted=p)


def score_ranking(relevance: np.ndarray, score: np.ndarray, groups: np.ndarray, k: int,
                  grouped: bool = True) -> Evaluation:
    rel, s = _numbers(relevance, "relevance labels"), _numbers(score, "scores")
    result = Evaluation("ranking", len(rel), {f"ndcg@{k}": metrics.ndcg_at(rel, s, groups, k),
                                              "ndcg": metrics.ndcg_at(rel, s, groups, len(rel) or 1)})
    result.metrics["groups"] = float(len(np.unique(groups)))
    if not grouped:
        result.notes.append("no --group column: every row is ranked as one query")
    return result


def check_gate(values: Mapping[str, float], under: Mapping[str, float],
               over: Mapping[str, float]) -> list[str]:
    """The failed conditions, worded (empty when every one holds): ``under`` are minimums, ``over`` maximums."""
    failed = []
    for limits, minimum in ((under, True), (over, False)):
        for name, limit in limits.items():
            if name not in values:
                raise EvaluateError(f"no metric {name!r} in this report; it has {', '.join(sorted(values))}")
            value = values[name]
            if (value < limit) if minimum else (value > limit):
                failed.append(f"{name} {value:.6g} is {'under' if minimum else 'over'} {limit:g}")
    return failed


def _with_truth(table: pa.Table, labels: str | Path, columns: Columns) -> pa.Table:
    """The predictions with the truth as column :data:`TRUTH`: a column of theirs, or joined from a file."""
    import pyarrow as pa

    path = Path(labels)
    if not path.exists():
        if str(labels) not in table.schema.names:
            raise EvaluateError(f"--labels {str(labels)!r} is neither a file nor a column of the predictions; "
                                f"their columns are {', '.join(map(repr, table.schema.names))}")
        return table.append_column(TRUTH, table.column(str(labels)))
    truth_table = read_table(path)
    name = columns.label_column or _only_column(truth_table, columns.key, path)
    truth = truth_table.column(column_name(truth_table, name, "labels"))
    if columns.key is None:
        if truth_table.num_rows != table.num_rows:
            raise EvaluateError(f"the labels have {truth_table.num_rows} rows and the predictions "
                                f"{table.num_rows}: give --key COLUMN to join them, or labels for every row")
        return table.append_column(TRUTH, truth)
    order = _join(column_array(table, columns.key, "key"), column_array(truth_table, columns.key, "key"), path)
    return table.append_column(TRUTH, pa.array(truth.to_pylist(), type=truth.type).take(pa.array(order)))


def _join(keys: np.ndarray, label_keys: np.ndarray, path: Path) -> np.ndarray:
    """For each prediction's key, the row of its label."""
    where: dict[Any, int] = {}
    for row, value in enumerate(label_keys.tolist()):
        if value in where:
            raise EvaluateError(f"{path}: key {value!r} appears more than once in the labels")
        where[value] = row
    missing = [v for v in keys.tolist() if v not in where]
    if missing:
        raise EvaluateError(f"{len(missing)} prediction key(s) have no label in {path} (first: {missing[0]!r})")
    return np.array([where[v] for v in keys.tolist()], dtype=np.int64)


def column_name(table: pa.Table, name: str, what: str) -> str:
    if name not in list(table.schema.names):
        raise TableError(f"no {what} column {name!r}; the columns are {', '.join(map(repr, table.schema.names))}")
    return str(name)


def _only_column(table: pa.Table, key: str | None, path: Path) -> str:
    rest = [n for n in table.schema.names if n != key]
    if len(rest) == 1:
        return str(rest[0])
    raise EvaluateError(f"{path} has columns {', '.join(map(repr, rest))}: name the labels with --label-column")


def _find(table: pa.Table, names: Sequence[str], what: str) -> str:
    for name in names:
        if name in table.schema.names:
            return name
    raise EvaluateError(f"no {what} column (looked for {', '.join(map(repr, names))}); the columns are "
                        f"{', '.join(map(repr, table.schema.names))}: name it with --prediction")


def _class_values(values: np.ndarray, what: str) -> np.ndarray:
    """Class labels as ints where they are whole numbers, text where text; anything else is refused."""
    if values.ndim != 1:
        raise EvaluateError(f"{what}: a class label per row is wanted, not shape {list(values.shape)}")
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
            raise EvaluateError(f"{what} hold fractional numbers (e.g. {values[values != np.round(values)][:1]}): "
                                "class labels must be whole numbers or text; is this a regression?")
        return values.astype(np.int64)
    if values.dtype.kind in "iub":
        return values.astype(np.int64)
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values.tolist()], dtype=object)


def _same_kind(truth: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    text_truth, text_predicted = truth.dtype == object, predicted.dtype == object
    if text_truth != text_predicted:
        t, p = ("text", "numbers") if text_truth else ("numbers", "text")
        raise EvaluateError(f"the labels are {t} (e.g. {truth[:1].tolist()}) and the predictions {p} "
                            f"(e.g. {predicted[:1].tolist()}): they cannot be compared")
    return truth, predicted


def _numbers(values: np.ndarray, what: str) -> np.ndarray:
    if values.dtype.kind not in "iufb":
        raise EvaluateError(f"{what} must be numbers; they are {values.dtype} (e.g. {values[:1].tolist()})")
    return values.astype(np.float64)


def _probability_index(truth: np.ndarray, probabilities: np.ndarray, classes: Sequence[Any] | None) -> np.ndarray:
    """Each row's true class as a column index of the probabilities."""
    width = probabilities.shape[1] if probabilities.ndim == 2 else 0
    if width < 2 or len(probabilities) != len(truth):
        raise EvaluateError(f"the probabilities column must hold one list of 2 or more per row; it has shape "
                            f"{list(probabilities.shape)}")
    if classes and truth.dtype != object:
        classes = [int(c) for c in classes]
    order = list(classes) if classes else (list(range(width)) if truth.dtype != object else sorted(set(truth)))
    if len(order) != width:
        raise EvaluateError(f"the probabilities have {width} columns and there are {len(order)} classes "
                            f"({order[:10]}): name the class of each column with --classes")
    where = {c: i for i, c in enumerate(order)}
    unknown = sorted({str(t) for t in truth.tolist() if t not in where})
    if unknown:
        raise EvaluateError(f"label(s) {', '.join(unknown[:5])} have no probabilities column "
                            f"(columns are classes {order[:10]})")
    return np.array([where[t] for t in truth.tolist()], dtype=np.int64)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
