"""Python models with the names, datatypes and shapes of Triton's qa models, written as real model folders, for
the tests that run Triton's client code against inferd."""

from __future__ import annotations

from pathlib import Path

from fakes import write_model

SIMPLE = """
import numpy as np

class Model:
    inputs = [{"name": "INPUT0", "datatype": "INT32", "shape": [-1, 16]},
              {"name": "INPUT1", "datatype": "INT32", "shape": [-1, 16]}]
    outputs = [{"name": "OUTPUT0", "datatype": "INT32", "shape": [-1, 16]},
               {"name": "OUTPUT1", "datatype": "INT32", "shape": [-1, 16]}]

    def predict(self, inputs):
        a, b = inputs["INPUT0"], inputs["INPUT1"]
        return {"OUTPUT0": a + b, "OUTPUT1": a - b}
"""
"""Triton's ``simple``: the sum and the difference of two INT32 [-1, 16] inputs (max_batch_size 8)."""

SIMPLE_STRING = """
import numpy as np

class Model:
    inputs = [{"name": "INPUT0", "datatype": "BYTES", "shape": [-1, 16]},
              {"name": "INPUT1", "datatype": "BYTES", "shape": [-1, 16]}]
    outputs = [{"name": "OUTPUT0", "datatype": "BYTES", "shape": [-1, 16]},
               {"name": "OUTPUT1", "datatype": "BYTES", "shape": [-1, 16]}]

    def predict(self, inputs):
        a, b = (np.array([[int(v) for v in row] for row in inputs[n]], dtype=np.int64) for n in ("INPUT0", "INPUT1"))
        text = lambda values: np.array([[str(v).encode() for v in row] for row in values], dtype=object)
        return {"OUTPUT0": text(a + b), "OUTPUT1": text(a - b)}
"""
"""Triton's ``simple_string``: ``simple`` on integers written as strings (BYTES [-1, 16], max_batch_size 8)."""

STRING_IDENTITY = """
class Model:
    inputs = [{"name": "INPUT0", "datatype": "BYTES", "shape": [-1]}]
    outputs = [{"name": "OUTPUT0", "datatype": "BYTES", "shape": [-1]}]

    def predict(self, inputs):
        return {"OUTPUT0": inputs["INPUT0"]}
"""
"""Triton's ``string_identity``: max_batch_size 0, dims [-1]: the one dimension is the model's own."""

IMAGE = """
class Model:
    inputs = [{"name": "IMAGE", "datatype": "FP32", "shape": [-1, 3, 4, 4]}]
    outputs = [{"name": "SCORES", "datatype": "FP32", "shape": [-1, 3]}]

    def predict(self, inputs):
        return {"SCORES": inputs["IMAGE"].mean(axis=(2, 3))}
"""
"""An image model whose model.toml declares its input channels first (FORMAT_NCHW)."""

IMAGE_TOML = """
[[inputs]]
name = "IMAGE"
datatype = "FP32"
shape = [-1, 3, 4, 4]
format = "FORMAT_NCHW"
"""

REPEAT_INT32 = """
import time

import numpy as np

class Model:
    inputs = [{"name": "IN", "datatype": "INT32", "shape": [-1]},
              {"name": "DELAY", "datatype": "UINT32", "shape": [-1]},
              {"name": "WAIT", "datatype": "UINT32", "shape": [1]}]
    outputs = [{"name": "OUT", "datatype": "INT32", "shape": [1]},
               {"name": "IDX", "datatype": "UINT32", "shape": [1]}]

    def predict(self, inputs):
        started = time.monotonic()
        values, delays = inputs["IN"], inputs["DELAY"]
        if len(delays) != len(values):
            raise ValueError(f"DELAY has {len(delays)} elements for {len(values)} in IN; give one per element")
        for index, (value, delay) in enumerate(zip(values, delays)):
            time.sleep(int(delay) / 1000)
            yield {"OUT": np.array([value], dtype=np.int32), "IDX": np.array([index], dtype=np.uint32)}
        left = int(inputs["WAIT"][0]) / 1000 - (time.monotonic() - started)
        if left > 0:
            time.sleep(left)  # the request is released (the final flag) no sooner than WAIT ms after it came
"""
"""Triton's ``repeat_int32`` (its backend's ``repeat.cc``): one response per element of IN, OUT = IN[i] and
IDX = i, each after DELAY[i] ms; decoupled, max_batch_size 0."""

DECOUPLED_TOML = """
max_batch_size = 0

[model_transaction_policy]
decoupled = true
"""


def write_triton_models(root: Path) -> None:
    write_model(root, "simple", SIMPLE, "max_batch_size = 8\n")
    write_model(root, "simple_string", SIMPLE_STRING, "max_batch_size = 8\n")
    write_model(root, "string_identity", STRING_IDENTITY, "max_batch_size = 0\n")
    write_model(root, "image", IMAGE, IMAGE_TOML)
    write_model(root, "repeat_int32", REPEAT_INT32, DECOUPLED_TOML)
