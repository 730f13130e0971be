"""What every command shares: consoles, error exits, opening a repository.

The command modules import only typer, rich and the standard library at module level: ``inferd --help`` and
every command's ``--help`` must not load what only inference needs (numpy, ml_dtypes, pydantic, onnxruntime,
the servers). Each command imports those when it runs; ``tests/unit/cli/test_cli_imports.py`` checks it.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from rich.console import Console
from rich.text import Text

from inferd.cli.logs import configure_logging as configure_logging  # the commands' one import of it

if TYPE_CHECKING:
    from inferd.errors import InferError
    from inferd.repository import ModelRepository

UNWRAPPED_WIDTH = 10_000
"""The width of output into a pipe or a file: wide enough that no line is wrapped or cut."""


def _console(stderr: bool = False) -> Console:
    """A console for stdout or stderr. On a terminal it wraps at the terminal's width; into a pipe or a file,
    unless COLUMNS says a width, nothing wraps (Rich would wrap at 80 columns), so that commands, paths and
    timestamps stay whole for whoever reads, greps or copies them."""
    found = Console(stderr=stderr)
    if found.is_terminal or os.environ.get("COLUMNS"):
        return found
    return Console(stderr=stderr, width=UNWRAPPED_WIDTH, soft_wrap=True)


console = _console()
errors = _console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: MESSAGE`` on stderr and exit. The message is plain text, never Rich markup: reasons such
    as ``pip install 'inferd[onnx]'`` or ``[options]`` print as written."""
    import typer  # here: ``inferd serve`` reads its command line without Typer (inferd.cli.fast)

    errors.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False)
    raise typer.Exit(code)


def fail_on(exc: InferError) -> NoReturn:
    fail(f"[{exc.code.value}] {exc.message}")


class Report(Protocol):
    """What a tool's library function returns (bench, optimize, evaluate, recommend)."""

    def to_dict(self) -> dict[str, Any]: ...


def show_report(result: Report, report: Path | None, as_json: bool, writer: str,
                printer: Callable[[Any, dict[str, Path]], None], **extra: Any) -> None:
    """The ending every tool command shares: with ``report`` a folder, ``writer`` (the name of a module with
    ``write_report(result, folder) -> {kind: path}``, imported only then) writes the report files; then the result
    prints as JSON (with ``extra`` fields and the files written) or through ``printer`` as a table."""
    written: dict[str, Path] = {}
    if report is not None:
        written = importlib.import_module(writer).write_report(result, report)
    if as_json:
        payload = {**result.to_dict(), **extra, "files": {kind: str(path) for kind, path in written.items()}}
        print(json.dumps(payload, indent=2, default=str))
    else:
        printer(result, written)


def open_repository(path: Path) -> ModelRepository:
    from inferd.repository import ModelRepository

    try:
        return ModelRepository(path)
    except FileNotFoundError as exc:
        fail(str(exc), code=2)
