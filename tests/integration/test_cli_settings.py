"""Settings that cannot be used, as a user meets them: ``inferd serve`` and ``inferd demo`` say in one line per
problem which option and which environment variable it is, what is wrong and where the value came from, and
exit 2 with no traceback (nothing starts, nothing is trained)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cli_runner import BIN, cli_env
from fakes import ADDER, write_model


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "inferd"), *args], capture_output=True, text=True, timeout=120, check=False,
                          env={**cli_env(), **(env or {})})


@pytest.fixture
def repo(repo_root: Path) -> Path:
    write_model(repo_root, "adder", ADDER)
    return repo_root


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        (["--http-port", "70000"], {},
         "error: --http-port / INFERD_HTTP_PORT: Input should be less than or equal to 65535, got 70000 "
         "(from --http-port)"),
        ([], {"INFERD_GRPC_PORT": "lots"},
         "error: --grpc-port / INFERD_GRPC_PORT: Input should be a valid integer, unable to parse string as an "
         "integer, got 'lots' (from INFERD_GRPC_PORT)"),
        ([], {"AIP_HTTP_PORT": "eighty"},  # Vertex AI's variable: was a ValueError traceback
         "error: --http-port / INFERD_HTTP_PORT: Input should be a valid integer, unable to parse string as an "
         "integer, got 'eighty' (from AIP_HTTP_PORT)"),
        ([], {"INFERD_MAX_QUEUE_SIZE": "0"},  # no option for it: only the variable
         "error: INFERD_MAX_QUEUE_SIZE: Input should be greater than or equal to 1, got '0'"),
        (["--log-level", "loud"], {},  # was a ValueError traceback from logging
         "error: --log-level / INFERD_LOG_LEVEL: Input should be 'debug', 'info', 'warning', 'error' or "
         "'critical', got 'loud' (from --log-level)"),
        ([], {"INFERD_API_KEYS": "[{"},  # was a pydantic_settings.SettingsError traceback
         "error: INFERD_API_KEYS: not valid JSON: Expecting property name enclosed in double quotes: line 1 "
         "column 3 (char 2)"),
    ],
)
def test_serve_names_the_option_the_variable_and_the_problem(repo, args, env, line):
    result = run("serve", str(repo), *args, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [line]
    assert "pydantic" not in result.stderr
    assert result.stdout == ""


def test_api_key_records_are_never_repeated_back(repo):
    result = run("serve", str(repo), env={"INFERD_API_KEYS": '[{"name": "ci", "sha256": "secret-looking"}]'})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: INFERD_API_KEYS: 0.sha256: sha256 must be 64 lower-case hex digits (the digest of the key, not "
        "the key)",
        "error: INFERD_API_KEYS: 0.scopes: Field required",
    ]


def test_every_problem_gets_its_own_line(repo):
    result = run("serve", str(repo), "--http-port", "-1", env={"INFERD_LOG_FORMAT": "xml", "INFERD_MAX_BATCH_SIZE": "0"})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: --http-port / INFERD_HTTP_PORT: Input should be greater than or equal to 0, got -1 (from --http-port)",
        "error: INFERD_MAX_BATCH_SIZE: Input should be greater than or equal to 1, got '0'",
        "error: --log-format / INFERD_LOG_FORMAT: Input should be 'text' or 'json', got 'xml' (from INFERD_LOG_FORMAT)",
    ]


def test_demo_says_so_before_it_trains(tmp_path):
    result = run("demo", "--repo", str(tmp_path / "demo"), "--once", "--grpc-port", "65536")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: --grpc-port / INFERD_GRPC_PORT: Input should be less than or equal to 65535, got 65536 "
        "(from --grpc-port)"]
    assert "Wrote" not in result.stdout
    assert not any((tmp_path / "demo").iterdir())
