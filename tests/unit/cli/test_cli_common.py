"""``fail`` prints its message as written."""

from __future__ import annotations

import pytest
import typer

from inferd.cli.common import fail


def test_fail_prints_square_brackets_as_text(capsys):
    with pytest.raises(typer.Exit) as exited:
        fail("the demo needs onnx; install them with: pip install 'inferd[demo]' (see [options])", code=2)
    assert exited.value.exit_code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err == "error: the demo needs onnx; install them with: pip install 'inferd[demo]' (see [options])"
