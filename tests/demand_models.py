"""Model folders for the models-on-demand tests: each load is counted in a file beside the model folder, and
may take a while (``delay`` seconds), fail, or hold memory (``hold_mb``); a negative input makes a call that takes
that many seconds."""

from __future__ import annotations

from pathlib import Path

from fakes import write_model

COUNTED = """
import time
from pathlib import Path
import numpy as np

DELAY = {delay}
HOLD_MB = {hold_mb}
FAIL = {fail}

class Model:
    inputs = [{{"name": "x", "datatype": "FP32", "shape": [-1]}}]
    outputs = [{{"name": "y", "datatype": "FP32", "shape": [-1]}}]

    def load(self, path):
        folder = Path(path).parent  # the model folder (path is its version folder)
        with open(folder.parent / (folder.name + ".loads"), "a") as log:
            log.write("load\\n")
        time.sleep(DELAY)
        if FAIL:
            raise RuntimeError("this model refuses to load")
        self.held = np.ones(HOLD_MB * 131072) if HOLD_MB else None  # float64: 8 bytes each, pages touched

    def predict(self, inputs):
        time.sleep(max(0.0, -float(inputs["x"].min())))  # a negative x: a call that takes -x seconds
        return {{"y": inputs["x"] * {factor}}}
"""


def write_counted(root: Path, name: str, delay: float = 0.0, hold_mb: int = 0, fail: bool = False,
                  toml: str | None = None, version: int = 1, factor: int = 2) -> Path:
    """A model ``name`` that doubles ``x`` (or multiplies by ``factor``) and counts its loads (:func:`loads`)."""
    source = COUNTED.format(delay=delay, hold_mb=hold_mb, fail=fail, factor=factor)
    return write_model(root, name, source, toml=toml, version=version)


def loads(root: Path, name: str) -> int:
    """How many times model ``name`` was loaded."""
    log = root / f"{name}.loads"
    return len(log.read_text().splitlines()) if log.exists() else 0


def infer_body(values: list[float], **parameters: object) -> dict[str, object]:
    body: dict[str, object] = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [len(values)], "data": values}]}
    if parameters:
        body["parameters"] = parameters
    return body
