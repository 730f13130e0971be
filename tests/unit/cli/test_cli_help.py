"""``--help`` of every command: defaults shown, flags without a value type, the serve defaults the same as the
settings', and ``--version``."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from inferd.cli.main import app
from inferd.settings import ServerSettings

RUNNER = CliRunner()


def commands() -> list[tuple[str, ...]]:
    """Every command path: ``()``, ``("serve",)``, ``("models", "list")``, ..."""
    found: list[tuple[str, ...]] = []

    def walk(command: Any, path: tuple[str, ...]) -> None:  # typer's own (vendored) Click command or group
        found.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


def help_of(*path: str) -> str:
    result = RUNNER.invoke(app, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())  # one line: a wrapped help string reads whole


def test_every_command_is_walked():
    assert {("serve",), ("demo",), ("batch", "run"), ("models", "show"), ("jobs", "result")} <= set(commands())


@pytest.mark.parametrize("path", commands(), ids=lambda p: " ".join(p) or "inferd")
def test_help_shows_no_value_type_for_flags(path):
    text = help_of(*path)
    assert "<bool>" not in text
    assert "--help Show this message and exit." in text


def test_serve_help_shows_every_default_it_writes():
    text = help_of("serve")
    for expected in ("[default: 127.0.0.1]", "[default: 8080]", "[default: 8081]", "[default: 64 MiB]",
                     "[default: info]", "[default: text]", "[default: .inferd]"):
        assert expected in text, text
    assert "--access-log Log one line per HTTP request." in text


def test_option_defaults_are_shown():
    assert "[default: 1024]" in help_of("batch", "run")
    assert "[default: demo-models]" in help_of("demo")
    assert "[default: 8080]" in help_of("demo")


def _as_written(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1024 * 1024 and value % (1024 * 1024) == 0:
        return f"{value // (1024 * 1024)} MiB"
    return str(value)


@pytest.mark.parametrize("path", [("serve",), ("demo",)], ids=" ".join)
def test_defaults_written_in_help_are_the_settings_defaults(path):
    """``serve`` leaves its options unset (so that INFERD_* variables apply) and writes the defaults into the
    help text: they must be what ServerSettings really uses."""
    checked = 0
    for param in typer.main.get_command(app).commands[path[0]].params:  # type: ignore[attr-defined]
        match = re.search(r"\[default: ([^\]]+)\]", getattr(param, "help", None) or "")
        if match and param.name in ServerSettings.model_fields:
            assert match.group(1) == _as_written(ServerSettings.model_fields[param.name].default), param.name
            checked += 1
    assert checked >= 2


def test_version():
    from importlib.metadata import version

    result = RUNNER.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"inferd {version('inferd')}\n"
