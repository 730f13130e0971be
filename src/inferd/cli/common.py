"""What every command shares: consoles, error exits, opening a repository."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.logging import RichHandler

from inferd.errors import InferError
from inferd.repository import ModelRepository

console = Console()
errors = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    errors.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(code)


def fail_on(exc: InferError) -> NoReturn:
    fail(f"[{exc.code.value}] {exc.message}")


def open_repository(path: Path) -> ModelRepository:
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
    stop_listener()
    logging.basicConfig(
        level=level.upper(),
        format="%(message)s",
        handlers=[RichHandler(console=errors, show_path=False, rich_tracebacks=False)],
        force=True,
    )
