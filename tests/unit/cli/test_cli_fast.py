"""``inferd serve`` read without Typer (inferd.cli.fast): its option table is the Typer command's, a command line it
reads gives serve the very arguments Typer gives, anything else is left to Typer, and the process it starts holds no
Typer or Click."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from inferd.cli import fast, serving
from inferd.cli.main import app


def _serve_command() -> Any:
    return typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]


def test_the_option_table_is_the_typer_commands():
    params = [p for p in _serve_command().params if p.name != "repo"]
    assert {p.opts[0]: p.name for p in params} == {option: name for option, (name, _) in fast.OPTIONS.items()}
    for param in params:
        _, convert = fast.OPTIONS[param.opts[0]]
        assert param.is_flag == (convert is fast.FLAG), param.name
        assert len(param.opts) == 1, param.name  # no alias
        assert not param.secondary_opts, param.name  # no --no-... form
        annotation = param.type_descriptor.annotation
        assert (fast.FLAG if annotation is bool else annotation) is convert, (param.name, annotation)
        assert param.envvar is None, param.name
        assert not param.multiple, param.name


LINES = [
    ["models"],
    ["models", "--http-port", "9000", "--grpc-port=0", "--access-log", "--poll-s", "0.5"],
    ["--host", "0.0.0.0", "models", "--allow-unauthenticated", "--state-dir", "st", "--memory-budget", "2GiB",
     "--model-control", "on-demand", "--idle-unload-s", "1e1", "--log-format", "json", "--log-level", "DEBUG"],
    ["models", "--tls-certfile", "c.pem", "--tls-keyfile=k.pem", "--tls-client-ca", "ca.pem", "--max-body-bytes",
     "2048", "--api-keys-file", "keys.toml", "--load-timeout-s", "3"],
]


@pytest.mark.parametrize("line", LINES, ids=" ".join)
def test_a_command_line_it_reads_gives_serve_what_typer_gives(line, monkeypatch):
    called: list[tuple[Path, dict[str, Any]]] = []
    monkeypatch.setattr(serving, "serve", lambda repo, **options: called.append((repo, options)))
    result = CliRunner().invoke(app, ["serve", *line])
    assert result.exit_code == 0, result.output
    assert fast.parse_serve(line) == called[0]


@pytest.mark.parametrize("line", [
    [], ["--help"], ["models", "--help"], ["a", "b"], ["models", "--http-port"], ["models", "--http-port", "x"],
    ["models", "--http-port", "-1"], ["models", "--unknown", "1"], ["models", "--poll-s", "1", "--poll-s", "2"],
    ["models", "--access-log=yes"], ["models", "--"], ["", "--host", "h"], ["models", "-h"],
], ids=" ".join)
def test_anything_else_is_left_to_typer(line):
    assert fast.parse_serve(line) is None


def test_the_serving_process_imports_no_typer_or_click(tmp_path):
    script = ("import json, sys\n"
              "import inferd.cli.serving as serving\n"
              "serving.serve = lambda repo, **options: None\n"
              "sys.argv = ['inferd', 'serve', sys.argv[1], '--http-port', '0']\n"
              "from inferd.cli.main import main\n"
              "main()\n"
              "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('typer', 'click'))))\n")
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60,
                         check=True)
    assert json.loads(run.stdout.strip().splitlines()[-1]) == []
