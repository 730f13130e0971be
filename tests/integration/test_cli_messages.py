"""Messages the CLI prints keep their square brackets: ``[options]``, ``pip install 'inferd[onnx]'`` and
``[INVALID_ARGUMENT]`` are text, not Rich markup."""

from __future__ import annotations

import subprocess
import sys

from cli_runner import cli_env


def test_the_pickle_refusal_names_the_options_table(cli, repo_root):
    (repo_root / "clf").mkdir()
    (repo_root / "clf" / "model.pkl").write_bytes(b"not read: refused before it is opened")
    listed = cli("models", "list", str(repo_root))
    assert listed.returncode == 1
    assert "under [options] in model.toml" in " ".join(listed.stdout.replace("│", " ").split())
    shown = cli("models", "show", str(repo_root), "clf")
    assert shown.returncode == 1
    assert "set allow_pickle = true under [options] in model.toml" in " ".join(shown.stdout.split())


def test_the_missing_framework_hint_names_the_extra(repo_root):
    """With onnxruntime hidden (``find_spec`` answers None for a module set to None in ``sys.modules``), a
    model.onnx fails to load with the extra to install, printed whole."""
    (repo_root / "digits").mkdir()
    (repo_root / "digits" / "model.onnx").write_bytes(b"not read: the runtime is missing")
    script = ("import sys; sys.modules['onnxruntime'] = None; from inferd.cli.main import main; "
              f"sys.argv = ['inferd', 'models', 'show', {str(repo_root)!r}, 'digits']; main()")
    shown = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                           env=cli_env(), check=False)
    assert shown.returncode == 1
    out = " ".join((shown.stdout + shown.stderr).split())
    assert "install it with: pip install 'inferd[onnx]'" in out, out


def test_an_error_code_keeps_its_brackets(cli, python_repo):
    result = cli("predict", str(python_repo), "adder", "--input", "-", stdin='{"a": [[1, 2]], "b": [[1, 2]]}')
    assert result.returncode == 1
    assert "error: [INVALID_ARGUMENT] input 'a'" in result.stderr
