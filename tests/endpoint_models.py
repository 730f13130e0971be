"""A model repository for the endpoint tests: ``scorer`` with a good version (1), another good one (2) and one
that fails 30 % of its requests (3), all served (version policy ``all``); ``broken``, which raises on every
request (a shadow that must never reach the caller); and a ``scorer2`` that scores differently (a shadow whose
answers disagree)."""

from __future__ import annotations

from pathlib import Path

from fakes import write_model

GOOD = """
import numpy as np

class Model:
    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    outputs = [{"name": "scores", "datatype": "FP32", "shape": [-1, 3]}]

    def predict(self, inputs):
        return {"scores": inputs["x"] * 2.0}
"""

FLAKY = """
import random

class Model:
    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    outputs = [{"name": "scores", "datatype": "FP32", "shape": [-1, 3]}]

    def predict(self, inputs):
        if random.random() < 0.3:
            raise RuntimeError("version 3 fails 30 % of its requests")
        return {"scores": inputs["x"] * 2.0}
"""

BROKEN = """
class Model:
    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    outputs = [{"name": "scores", "datatype": "FP32", "shape": [-1, 3]}]

    def predict(self, inputs):
        raise RuntimeError("this shadow always fails")
"""

REVERSED = """
class Model:
    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    outputs = [{"name": "scores", "datatype": "FP32", "shape": [-1, 3]}]

    def predict(self, inputs):
        return {"scores": -inputs["x"]}
"""

NO_BATCHING = """
[scheduling]
dynamic_batching = false
"""

ALL_VERSIONS = """
[versions]
policy = "all"
"""

ENDPOINTS_TOML = """
[front]
variants = [
  {name = "blue", model = "scorer", version = 1, weight = 80},
  {name = "green", model = "scorer", version = 2, weight = 20},
]
"""


def write_endpoint_repository(root: Path) -> Path:
    write_model(root, "scorer", GOOD, toml=ALL_VERSIONS, version=1)
    write_model(root, "scorer", GOOD, version=2)
    write_model(root, "scorer", FLAKY, version=3)
    write_model(root, "broken", BROKEN)
    write_model(root, "scorer2", REVERSED)
    (root / "endpoints.toml").write_text(ENDPOINTS_TOML)
    return root


def row(values: tuple[float, float, float] = (1.0, 2.0, 3.0)) -> dict[str, object]:
    """A V2 JSON request body of one row."""
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": list(values)}]}
