"""``inferd evaluate``: score predictions against labels; a table for people, ``--json`` for machines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from inferd.cli.common import console, fail, show_report

GATE_FAILED = 1
BAD_INPUT = 2


def evaluate(  # noqa: PLR0913, PLR0917 - one parameter per command-line option
    predictions: Annotated[Path, typer.Argument(metavar="PREDICTIONS", help="CSV, JSON Lines or Parquet file (or a "
                                                "folder of them, as `inferd batch run` writes) with the predictions.")],
    labels: Annotated[str, typer.Option(help="The truth: a column of PREDICTIONS, or a file (CSV/JSONL/Parquet).")],
    task: Annotated[str, typer.Option(help="classification, regression or ranking.")],
    prediction: Annotated[str | None, typer.Option(help="Prediction column; default label/prediction/score.")] = None,
    probabilities: Annotated[str | None, typer.Option(
        help="Classification: column of class probabilities (lists); default 'probabilities' if present.")] = None,
    label_column: Annotated[str | None, typer.Option(help="Column of the labels file; default its only one.")] = None,
    key: Annotated[str | None, typer.Option(help="Join predictions and labels file on this column.")] = None,
    slice_by: Annotated[str | None, typer.Option("--slice", help="Also score each value of this column.")] = None,
    group: Annotated[str | None, typer.Option(help="Ranking: the query/group column.")] = None,
    k: Annotated[int, typer.Option(help="Ranking: NDCG@k.")] = 10,
    classes: Annotated[str | None, typer.Option(
        help="Comma-separated class of each probabilities column (default: sorted labels).")] = None,
    fail_under: Annotated[list[str] | None, typer.Option(
        help="METRIC=VALUE: exit 1 when the metric is below VALUE (repeatable), e.g. accuracy=0.95.")] = None,
    fail_over: Annotated[list[str] | None, typer.Option(
        help="METRIC=VALUE: exit 1 when the metric is above VALUE, e.g. rmse=4.")] = None,
    report: Annotated[Path | None, typer.Option(
        help="Write evaluation.json, a PNG plot and evaluation.html here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Score PREDICTIONS against the truth: accuracy, per-class precision/recall/F1, ROC AUC, log loss and a
    confusion matrix; MAE, RMSE, R²; NDCG@k. Exit 1 when a --fail-under/--fail-over gate fails, 2 on bad input."""
    from inferd.tools.evaluate import Columns, EvaluateError, check_gate
    from inferd.tools.evaluate import evaluate as run
    from inferd.tools.tables import TableError

    columns = Columns(prediction, probabilities, label_column, key, slice_by, group,
                      tuple(c.strip() for c in classes.split(",")) if classes else None)
    try:
        under, over = _limits(fail_under or [], "--fail-under"), _limits(fail_over or [], "--fail-over")
        result = run(predictions, labels, task, columns, k)  # type: ignore[arg-type]  # checked inside
        failed = check_gate(result.metrics, under, over)
    except (EvaluateError, TableError) as exc:
        fail(str(exc), code=BAD_INPUT)
    show_report(result, report, as_json, "inferd.tools.evaluate_report", _print, failed=failed)
    if failed:
        fail("gate failed: " + "; ".join(failed), code=GATE_FAILED)


def _limits(given: list[str], option: str) -> dict[str, float]:
    from inferd.tools.evaluate import EvaluateError
    from inferd.tools.metrics import higher_is_better

    limits: dict[str, float] = {}
    for item in given:
        name, _, text = item.partition("=")
        try:
            limits[name.strip()] = float(text)
        except ValueError:
            raise EvaluateError(f"{option} {item!r}: expected METRIC=NUMBER, e.g. accuracy=0.95") from None
        better = higher_is_better(name.strip())
        if better is not None and better != (option == "--fail-under"):
            other = "--fail-over" if option == "--fail-under" else "--fail-under"
            lower = "lower" if option == "--fail-under" else "higher"
            raise EvaluateError(f"{option} {item}: {name} is better when {lower}; use {other}")
    return limits


def _print(result: object, written: dict[str, Path]) -> None:
    from rich.table import Table

    from inferd.tools.evaluate import Evaluation

    assert isinstance(result, Evaluation)
    table = Table(title=f"{result.task}: {result.rows} rows")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result.metrics.items():
        table.add_row(name, f"{value:.4f}")
    console.print(table)
    if result.per_class:
        classes = Table(title="per class")
        for heading in ("class", "precision", "recall", "F1", "support"):
            classes.add_column(heading, justify="right")
        for row in result.per_class:
            classes.add_row(str(row["class"]), f"{row['precision']:.4f}", f"{row['recall']:.4f}",
                            f"{row['f1']:.4f}", str(row["support"]))
        console.print(classes)
    for part, scored in result.slices.items():
        shown = ", ".join(f"{n} {v:.4f}" for n, v in scored["metrics"].items())
        console.print(f"slice {part} ({scored['rows']} rows): {shown}", highlight=False)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    for kind, path in written.items():
        console.print(f"{kind}: {path}", highlight=False, soft_wrap=True)
