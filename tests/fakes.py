"""Tiny fake models shared by the tests, written as real model folders."""

from __future__ import annotations

import textwrap
from pathlib import Path

ADDER = """
import numpy as np

class Model:
    inputs = [{"name": "a", "datatype": "FP32", "shape": [-1, 3]},
              {"name": "b", "datatype": "FP32", "shape": [-1, 3]}]
    outputs = [{"name": "sum", "datatype": "FP32", "shape": [-1, 3]},
               {"name": "total", "datatype": "FP64", "shape": [-1]}]

    def predict(self, inputs):
        s = inputs["a"] + inputs["b"]
        return {"sum": s, "total": s.sum(axis=1).astype(np.float64)}
"""

FAILING = """
import numpy as np

class Model:
    inputs = [{"name": "x", "datatype": "INT64", "shape": [-1]}]
    outputs = [{"name": "y", "datatype": "INT64", "shape": [-1]}]

    def predict(self, inputs):
        x = inputs["x"]
        if (x < 0).any():
            raise ValueError("negative values are not allowed")
        if (x == 7).any():
            return {"y": np.zeros(len(x) + 1, dtype=np.int64)}   # wrong length on purpose
        return {"y": x * 2}
"""


def write_model(root: Path, name: str, source: str, toml: str | None = None, version: int | None = 1,
                filename: str = "model.py") -> Path:
    """Write a model folder; ``version=None`` puts the artifact straight in the model folder."""
    folder = root / name
    target = folder / str(version) if version is not None else folder
    target.mkdir(parents=True, exist_ok=True)
    (target / filename).write_text(textwrap.dedent(source))
    if toml is not None:
        (folder / "model.toml").write_text(textwrap.dedent(toml))
    return folder

SHOUT = """
import numpy as np

class Model:
    inputs = [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    outputs = [{"name": "upper", "datatype": "BYTES", "shape": [-1]}]

    def predict(self, inputs):
        out = np.empty(len(inputs["text"]), dtype=object)
        out[:] = [t.decode().upper().encode() for t in inputs["text"]]
        return {"upper": out}
"""

CLASSIFIER = """
import numpy as np

class Model:
    inputs = [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    outputs = [{"name": "label", "datatype": "INT64", "shape": [-1]},
               {"name": "scores", "datatype": "FP32", "shape": [-1, 2]}]

    def predict(self, inputs):
        s = inputs["features"].sum(axis=1)
        return {"label": (s > 0).astype(np.int64), "scores": np.stack([-s, s], axis=1)}
"""

UNBATCHED = """
import numpy as np

class Model:
    inputs = [{"name": "m", "datatype": "FP32", "shape": [2, 2]}]
    outputs = [{"name": "doubled", "datatype": "FP32", "shape": [2, 2]}]

    def predict(self, inputs):
        return {"doubled": inputs["m"] * 2}
"""

STREAMER = """
import time
import numpy as np

class Model:
    inputs = [{"name": "n", "datatype": "INT32", "shape": [1]}]
    outputs = [{"name": "i", "datatype": "INT32", "shape": [1]}]

    def load(self, path):
        self.closed = path / "closed"

    def predict(self, inputs):
        n = int(inputs["n"][0])
        k = 0
        try:
            while n < 0 or k < n:
                if n == -2 and k == 2:
                    raise ValueError("broke after two responses")
                if n == -3:
                    yield {"i": np.zeros((2, 2), dtype=np.int32)}
                yield {"i": np.array([k], dtype=np.int32)}
                k += 1
                if n == -1:
                    time.sleep(0.01)
        finally:
            if n == -1:
                self.closed.write_text(str(k))
"""
"""A decoupled model: ``n`` responses ``i = 0 .. n-1``; -1: one every 10 ms until its caller goes away (then it
writes the count to ``closed`` in its version folder); -2: two, then it raises; -3: a response of the wrong
shape."""

DECOUPLED = """
[model_transaction_policy]
decoupled = true
"""
