"""What every command shares: consoles, error exits, opening a repository.

The command modules import only typer, rich and the standard library at module level: ``inferd --help`` and
every command's ``--help`` must not load what only inference needs (numpy, ml_dtypes, pydantic, onnxruntime,
the servers). Each command imports those when it runs; ``tests/unit/cli/test_cli_imports.py`` checks it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from rich.console import Console
from rich.text import Text

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


def open_repository(path: Path) -> ModelRepository:
    from inferd.repository import ModelRepository

    try:
        return ModelRepository(path)
    except FileNotFoundError as exc:
        fail(str(exc), code=2)


def configure_logging(level: str, log_format: str = "text") -> None:
    """Logs go to stderr: through Rich (``text``), or as JSON Lines with request ids (``json``, see
    :mod:`inferd.observability.logging`). Configured by the CLI entry point, never at import."""
    from inferd.observability.logging import configure_json, stop_listener

    if log_format == "json":
        configure_json(level)
        return
    from rich.logging import RichHandler

    stop_listener()
    logging.basicConfig(
        level=level.upper(),
        format="%(message)s",
        handlers=[RichHandler(console=errors, show_path=False, rich_tracebacks=False)],
        force=True,
    )
