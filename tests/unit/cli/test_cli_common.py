"""``fail`` prints its message as written; ``show_report`` ends every tool command the same way."""

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


class _Result:
    def to_dict(self) -> dict[str, object]:
        return {"model": "m", "rows": 3}


def test_show_report_writes_the_files_then_prints_json_with_them(tmp_path, monkeypatch, capsys) -> None:
    import json
    import sys
    import types

    from inferd.cli.common import show_report

    writer = types.ModuleType("fake_report_writer")
    writer.write_report = lambda result, folder: {"json": folder / "r.json"}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_report_writer", writer)
    printed: list[object] = []
    show_report(_Result(), tmp_path, True, "fake_report_writer", lambda r, w: printed.append(w), failed=["x"])
    assert json.loads(capsys.readouterr().out) == {"model": "m", "rows": 3, "failed": ["x"],
                                                   "files": {"json": str(tmp_path / "r.json")}}
    assert printed == []
    show_report(_Result(), None, False, "fake_report_writer", lambda r, w: printed.append(w))
    assert printed == [{}]
