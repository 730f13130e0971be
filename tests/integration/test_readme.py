"""Every README code block that is meant to run, runs: the two commands, the usage session and the
Python model example."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from cli_runner import ROOT, cli_env, inferd

FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(kind: str, label: str = "") -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [body for lang, info, body in FENCE.findall(text) if lang == kind and info.strip() == label]


def commands(block: str) -> list[str]:
    return [line[2:] for line in block.splitlines() if line.startswith("$ ")]


def console_blocks() -> list[list[str]]:
    return [commands(b) for b in blocks("console")]


def test_readme_opens_with_the_two_commands():
    first, second = console_blocks()[:2]
    assert first == ["make demo"]
    assert second == ["make test"]


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    steps = [line.strip() for line in ci if line.strip() and not line.lstrip().startswith("#")]
    assert steps[-1] == console_blocks()[1][0]


@pytest.mark.slow
def test_make_demo_then_the_usage_session():
    """``make demo`` for real (using this test run's environment as its venv), then the usage block."""
    env = cli_env()
    env["VENV"] = sys.prefix  # the Makefile's venv: reuse the one running these tests
    demo = subprocess.run(["bash", "-c", console_blocks()[0][0]], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900, check=False)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    for name in ("spam", "eta", "ranker", "digits"):
        assert name in demo.stdout
    usage = console_blocks()[2]
    assert usage[0] == "source .venv/bin/activate"
    script = "set -euo pipefail\n" + "\n".join(usage[1:])  # the venv's bin is already first on PATH
    session = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=300, check=False)
    assert session.returncode == 0, session.stdout + session.stderr
    assert session.stdout.count("READY") >= 4
    assert '"spam"' in session.stdout
    assert '"model_name":"eta"' in session.stdout.replace(" ", "")
    (ROOT / "msg.json").unlink(missing_ok=True)


def test_python_model_example(tmp_path):
    (python_source,) = blocks("python", "model.py")
    (toml_source,) = blocks("toml", "model.toml")
    folder = tmp_path / "models" / "mine"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.py").write_text(python_source)
    (folder / "model.toml").write_text(toml_source)
    result = inferd("predict", str(tmp_path / "models"), "mine", "--input", "-", stdin='{"x": [[1, 2], [3, 4]]}')
    assert result.returncode == 0, result.stderr
    assert '"data":[2.0,4.0,6.0,8.0]' in result.stdout.replace(" ", "").replace("\n", "")
    assert os.path.exists(folder / "model.toml")
