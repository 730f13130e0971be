"""The ``inferd`` command's entry point. ``inferd serve ...`` is read without Typer when it can be
(:mod:`inferd.cli.fast`): a server that starts pays for no CLI framework. Everything else goes to the Typer
application, :mod:`inferd.cli.typer_app` (also reachable here as ``app``)."""

from __future__ import annotations

import sys
from typing import Any


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        from inferd.cli.fast import serve

        if serve(sys.argv[2:]):
            return
    from inferd.cli.typer_app import app

    app()


def __getattr__(name: str) -> Any:
    if name == "app":
        from inferd.cli.typer_app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
