"""``inferd optimize``: convert, optimise and quantize a model, gated on held-out data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from inferd.cli.common import console, fail, show_report

BAD_INPUT = 2


def optimize(  # noqa: PLR0913, PLR0917 - one parameter per command-line option
    repo: Annotated[Path, typer.Argument(metavar="REPO", help="Model repository folder.")],
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Model name (its folder in REPO).")],
    data: Annotated[Path, typer.Option(help="Held-out rows (CSV, JSON Lines or Parquet), columns as for "
                                       "`inferd batch run`.")],
    labels: Annotated[str | None, typer.Option(help="Column of DATA with the truth (left out of the inputs).")] = None,
    ignore: Annotated[str | None, typer.Option(help="Comma-separated columns of DATA that are not inputs "
                                               "(an id, a group).")] = None,
    max_accuracy_drop: Annotated[str, typer.Option(
        help="Gate: how far the metric may fall below the original's: 0.5% (relative) or 0.005 (absolute).")] = "0.5%",
    version: Annotated[int | None, typer.Option(help="Version to start from; default the newest.")] = None,
    objective: Annotated[str, typer.Option(help="latency (batch 1) or throughput (batch 64).")] = "latency",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Measure and report; write no version.")] = False,
    seconds: Annotated[float, typer.Option(help="Timing per candidate and batch size, in seconds.")] = 0.5,
    report: Annotated[Path | None, typer.Option(
        help="Write optimize.json, optimize.png and optimize.html here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Try faster versions of MODEL (ONNX conversion, graph optimisation, int8 quantization), compare each with
    the original on DATA, and write the fastest one that passes the accuracy gate as the next version folder."""
    from inferd.tools.optimize import OptimizeOptions
    from inferd.tools.optimize import optimize as run
    from inferd.tools.optimize_data import OptimizeError

    try:
        options = OptimizeOptions(labels, max_accuracy_drop, version, not dry_run, objective, seconds,
                                  [c.strip() for c in ignore.split(",")] if ignore else [])
        result = run(repo, model, data, options)
    except OptimizeError as exc:
        fail(str(exc), code=BAD_INPUT)
    show_report(result, report, as_json, "inferd.tools.optimize_report", _print)


def _print(result: object, written: dict[str, Path]) -> None:
    from rich.table import Table

    from inferd.tools.optimize import OptimizeReport

    assert isinstance(result, OptimizeReport)
    table = Table(title=f"{result.model} v{result.version} ({result.runtime}), {result.rows} rows; gate: "
                  f"{result.metric} drop <= {result.allowed_drop:.4g}")
    for heading in ("candidate", result.metric, "drop", "gate", "max |diff|", "argmax agree", "p50 us (b=1)",
                    "rows/s (b=64)", "size KiB"):
        table.add_column(heading, justify="right")
    for c in result.candidates:
        if c.error:
            table.add_row(c.name, "-", "-", "error", "-", "-", "-", "-", "-")
            continue
        speed = c.speed
        table.add_row(c.name, _number(c.metric), _number(c.drop),
                      "pass" if c.passed else "FAIL", _number(c.agreement.get("max_abs_diff")),
                      _number(c.agreement.get("argmax_agreement")),
                      f"{speed.latency_p50_us:.1f}" if speed else "-",
                      f"{speed.throughput_rows_s:,.0f}" if speed else "-", f"{c.size_bytes / 1024:.1f}")
    console.print(table)
    for c in result.candidates:
        if c.error:
            console.print(f"{c.name}: {c.error}", highlight=False, soft_wrap=True)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    console.print(f"written: {result.written}" if result.written else "written: nothing", highlight=False)
    for kind, path in written.items():
        console.print(f"{kind}: {path}", highlight=False, soft_wrap=True)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
