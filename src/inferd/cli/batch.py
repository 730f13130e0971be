"""``inferd batch run``: score files of records with a model, resumably, with a progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from inferd.cli.common import console, errors, fail

if TYPE_CHECKING:
    from rich.progress import TaskID

    from inferd.batch import BatchOptions, BatchSummary
    from inferd.batch.progress import Progress as JobProgress

app = typer.Typer(help="Batch inference jobs: score CSV, JSON Lines and Parquet files.", no_args_is_help=True)


@app.command("run")
def run(  # noqa: PLR0913, PLR0917 - one parameter per command-line option
    repo: Annotated[Path, typer.Argument(metavar="REPO", help="Model repository folder.")],
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Model name.")],
    input_location: Annotated[str, typer.Option("--input", "-i", help="Input file or folder: a local path or an "
                                                "fsspec URL (CSV, JSON Lines, Parquet; .gz for text).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")],
    batch_size: Annotated[int, typer.Option(help="Rows per mini-batch.")] = 1024,
    concurrency: Annotated[int | None, typer.Option(help="Mini-batches in flight (ray: model actors); default 2. "
                                                    "OpenAI batch lines: requests in flight; default the model's "
                                                    "slots.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds per mini-batch before it is retried; 0 for none.")] = 300,
    retries: Annotated[int, typer.Option(help="Retries of a mini-batch that failed for a transient reason.")] = 2,
    max_errors: Annotated[str | None, typer.Option(help="Failed records allowed: a count (10; 0 fails the job on "
                                                   "any failed record) or a fraction (0.01 or 1%); the job fails "
                                                   "beyond it. Default: no limit.")] = None,
    join: Annotated[bool, typer.Option("--join/--no-join", help="Append predictions to the input columns, or "
                                       "write predictions only.")] = False,
    key: Annotated[str | None, typer.Option(help="Id column carried to every output row and error record.")] = None,
    mapping: Annotated[list[str] | None, typer.Option("--map", help="INPUT=COLUMN (or INPUT=A,B,C): feed model "
                                                      "input INPUT from COLUMN(s); repeatable.")] = None,
    output_format: Annotated[str | None, typer.Option("--format", help="csv, jsonl or parquet; default: the "
                                                      "input's format.")] = None,
    engine: Annotated[str, typer.Option(help="local (this machine) or ray (Ray Data; RAY_ADDRESS or a local "
                                        "Ray).")] = "local",
    version: Annotated[str | None, typer.Option(help="Model version; default the newest ready one.")] = None,
    restart: Annotated[bool, typer.Option(help="Discard an earlier, interrupted run in OUTPUT, start over.")] = False,
) -> None:
    """Score every record of --input with MODEL from REPO into --output. Run the same command again after an
    interruption to resume where it stopped. A JSON Lines file of OpenAI batch requests (custom_id, method, url,
    body) or of chat/completion bodies (messages or prompt) gets one OpenAI batch output line per line, in
    OUTPUT/<name>_output.jsonl."""
    from inferd.batch import BatchError, BatchOptions, ThresholdError, run_batch

    if _openai_lines(input_location):
        _run_openai(repo, model, Path(input_location), output, concurrency, restart)
        return
    options = _options(BatchOptions, batch_size=batch_size, concurrency=concurrency or 2, timeout_s=timeout or None,
                       retries=retries, max_errors=max_errors, join=join, key=key, mapping=mapping,
                       output_format=output_format, engine=engine, restart=restart, model_version=version)
    with _progress_bar() as bar:
        try:
            summary = run_batch(repo, model, input_location, output, options, on_progress=bar.show)
        except ThresholdError as exc:
            bar.stop()
            _print_summary(exc.summary)
            fail(str(exc))
        except BatchError as exc:
            bar.stop()
            fail(str(exc))
    _print_summary(summary)
    console.print(_outcome(summary), highlight=False, soft_wrap=True)  # one line, its path whole


def _openai_lines(location: str) -> bool:
    """Whether --input is a local JSON Lines file of OpenAI batch requests (see ``inferd.server.openai.batch``)."""
    path = Path(location)
    if not path.is_file() or not path.name.endswith((".jsonl", ".json")):
        return False
    from inferd.batch.lines import request_lines
    from inferd.server.openai.batch import is_openai_lines

    first = next(request_lines(path), None)
    return first is not None and is_openai_lines(first)


def _run_openai(repo: Path, model: str, input: Path, output: Path, concurrency: int | None, restart: bool) -> None:
    from inferd.batch import BatchError
    from inferd.server.openai.batch import run_openai_batch

    with _progress_bar() as bar:
        try:
            summary = run_openai_batch(repo, model, input, output, concurrency=concurrency or 0,
                                       restart=restart, on_progress=bar.show)
        except BatchError as exc:
            bar.stop()
            fail(str(exc))
    _print_summary(summary)
    console.print(f"batch job {summary.state}: {summary.rows_out:,} request lines answered, "
                  f"{summary.rows_failed:,} failed, in {summary.outputs[0]}", highlight=False, soft_wrap=True)


def _options(factory: type[BatchOptions], *, max_errors: str | None, mapping: list[str] | None,
             **given: object) -> BatchOptions:
    from inferd.batch import BatchError
    from inferd.batch.options import parse_max_errors

    pairs: dict[str, str] = {}
    for item in mapping or []:
        name, sep, column = item.partition("=")
        if not sep or not name or not column:
            fail(f"--map takes INPUT=COLUMN, got {item!r}", code=2)
        pairs[name] = column
    try:
        limit = parse_max_errors(max_errors) if max_errors is not None else None
    except ValueError as exc:
        fail(f"--max-errors: {exc}", code=2)
    try:
        return factory(max_errors=limit, mapping=pairs, **given).validated()  # type: ignore[arg-type]
    except BatchError as exc:
        fail(str(exc), code=2)


class _progress_bar:  # noqa: N801 - used as a context manager, like a function
    """A Rich progress bar on stderr: rows done of the total (estimated for CSV/JSONL), rows/s, ETA. It appears
    with the job's first progress report, sent once the job is checked: an error found before prints alone."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("[bold]scoring"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
            TextColumn("ETA {task.fields[eta]}"), TextColumn("{task.fields[failed]}"), TimeElapsedColumn(),
            console=errors, transient=False,
        )
        self.task: TaskID | None = None

    def __enter__(self) -> _progress_bar:
        return self

    def show(self, progress: JobProgress) -> None:
        if self.task is None:
            self.bar.start()
            self.task = self.bar.add_task("scoring", total=None, rate="", eta="-", failed="")
        self.bar.update(self.task, completed=progress.rows_done, total=progress.rows_total,
                        rate=f"{progress.rows_per_s:,.0f} rows/s",
                        eta=_eta(progress.eta_s), failed=f"{progress.rows_failed:,} failed")

    def stop(self) -> None:
        if self.bar.live.is_started:  # stopping ends its line: not when it never showed, nor twice
            self.bar.stop()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _outcome(summary: BatchSummary) -> str:
    """The last line of a job that ran to the end: how many rows it scored and, above all, how many failed."""
    scored = f"{summary.rows_out:,} of {summary.rows_in:,} rows scored"
    if not summary.rows_failed:
        return f"batch job {summary.state}: {scored}"
    from rich.markup import escape

    failed = f"{summary.rows_failed:,} row{'s' if summary.rows_failed != 1 else ''} failed"
    return (f"[bold yellow]batch job {summary.state} with {failed}[/] ({scored}): see "
            f"{escape(summary.errors_file or '')}; --max-errors 0 makes any failed row fail the job")


def _print_summary(summary: BatchSummary) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"batch job {summary.state}", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("rows in", f"{summary.rows_in:,}")
    table.add_row("rows out", f"{summary.rows_out:,}")
    table.add_row("rows failed", f"{summary.rows_failed:,}")
    table.add_row("seconds", f"{summary.seconds:.2f}")
    table.add_row("rows/s", f"{summary.rows_per_s:,.0f}")
    table.add_row("mini-batches", f"{summary.batches:,} ({summary.resumed_batches:,} from an earlier run)")
    for path in summary.outputs:
        table.add_row("output", Text(path))
    if summary.errors_file:
        table.add_row("errors", Text(summary.errors_file))
    console.print(table)
