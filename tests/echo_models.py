"""One echo model per V2 datatype, to round-trip every datatype through every transport."""

from __future__ import annotations

from pathlib import Path

from inferd.tensors import DATATYPES

ECHO = '''
class Model:
    inputs = [{{"name": "x", "datatype": "{datatype}", "shape": [-1, -1]}}]
    outputs = [{{"name": "y", "datatype": "{datatype}", "shape": [-1, -1]}}]

    def predict(self, inputs):
        return {{"y": inputs["x"]}}
'''


def echo_name(datatype: str) -> str:
    return f"echo_{datatype.lower()}"


def write_echo_models(root: Path) -> list[str]:
    names = []
    for datatype in DATATYPES:
        folder = root / echo_name(datatype) / "1"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.py").write_text(ECHO.format(datatype=datatype))
        names.append(echo_name(datatype))
    return names
