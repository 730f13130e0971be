"""The ``inferd`` command."""

from __future__ import annotations

from typing import Annotated

import typer

from inferd.cli import batch, demo, jobs, keys, models, predict, serve
from inferd.cli.common import configure_logging

app = typer.Typer(
    name="inferd",
    help="Serve trained models in real time, asynchronously and in batch.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(models.app, name="models")
app.add_typer(jobs.app, name="jobs")
app.add_typer(batch.app, name="batch")
app.add_typer(keys.app, name="keys")
app.command("predict")(predict.predict)
app.command("serve")(serve.serve)
app.command("demo")(demo.demo)


@app.callback()
def _root(
    log_level: Annotated[str, typer.Option(help="Log level: debug, info, warning, error.")] = "error",
) -> None:
    configure_logging(log_level)


def main() -> None:
    app()
