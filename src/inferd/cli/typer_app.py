"""The ``inferd`` command's Typer application (the entry point is :func:`inferd.cli.main.main`).

Help is plain Click text (``rich_markup_mode=None``), not Rich markup: with markup, Rich reads every
``[default: 8080]`` and ``[onnx]`` in a help string as a style tag and drops it, and Typer's Rich panels show
``<bool>`` beside flags that take no value.
"""

from __future__ import annotations

from typing import Annotated

import typer

from inferd.cli import batch, bench, demo, endpoints, evaluate, jobs, keys, models, optimize, predict, recommend, serve
from inferd.cli.common import configure_logging

app = typer.Typer(
    name="inferd",
    help="Serve trained models in real time, asynchronously and in batch.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"max_content_width": 120},  # Click wraps at 80 columns otherwise, even on a wide terminal
)
app.add_typer(models.app, name="models")
app.add_typer(jobs.app, name="jobs")
app.add_typer(batch.app, name="batch")
app.add_typer(keys.app, name="keys")
app.add_typer(endpoints.app, name="endpoints")
app.command("predict")(predict.predict)
app.command("serve")(serve.serve)
app.command("demo")(demo.demo)
app.command("optimize")(optimize.optimize)
app.command("evaluate")(evaluate.evaluate)
app.command("bench")(bench.bench)
app.command("recommend")(recommend.recommend)


def _print_version(given: bool) -> None:
    if given:
        from importlib.metadata import version

        print(f"inferd {version('inferd')}")
        raise typer.Exit()


@app.callback()
def _root(
    log_level: Annotated[str, typer.Option(help="Log level: debug, info, warning, error.")] = "error",
    _version: Annotated[bool, typer.Option("--version", help="Print the version and exit.",
                                           callback=_print_version, is_eager=True)] = False,
) -> None:
    configure_logging(log_level)
