"""Models and input files for the batch job tests: a real ONNX classifier, slow and failing python models."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from fakes import write_model

FEATURES = ("f0", "f1", "f2", "f3")

SLOW = """
import time
import numpy as np

class Model:
    inputs = [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    outputs = [{"name": "score", "datatype": "FP64", "shape": [-1]}]

    def predict(self, inputs):
        time.sleep(0.04)
        return {"score": inputs["input"].astype(np.float64).sum(axis=1)}
"""

PICKY = """
import numpy as np

class Model:
    inputs = [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    outputs = [{"name": "score", "datatype": "FP64", "shape": [-1]}]

    def predict(self, inputs):
        x = inputs["input"]
        if (x[:, 0] < -1.5).any():
            raise ValueError("f0 below -1.5")
        return {"score": x.astype(np.float64).sum(axis=1)}
"""

FLAKY = """
import numpy as np
from inferd.errors import unavailable

class Model:
    inputs = [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    outputs = [{"name": "score", "datatype": "FP64", "shape": [-1]}]

    def load(self):
        self.calls = 0

    def predict(self, inputs):
        self.calls += 1
        if self.calls % 2:
            raise unavailable("warming up, try again")
        return {"score": inputs["input"].astype(np.float64).sum(axis=1)}
"""


def write_onnx_classifier(root: Path, name: str = "clf") -> Any:
    """A LogisticRegression on 4 features as ONNX (input ``input`` FP32 [-1,4]; outputs label, probabilities).
    Returns the scikit-learn model, to check predictions against."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    model = LogisticRegression().fit(x, (x[:, 0] + x[:, 1] > 0).astype(np.int64))
    converted = convert_sklearn(model, name=name, initial_types=[("input", FloatTensorType([None, 4]))],
                                options={id(model): {"zipmap": False}}, target_opset=17)
    (root / name / "1").mkdir(parents=True)
    (root / name / "1" / "model.onnx").write_bytes(converted.SerializeToString())
    return model


def write_python_model(root: Path, name: str, source: str) -> None:
    write_model(root, name, source)


def feature_table(rows: int, seed: int = 0) -> pa.Table:
    """id (INT64), f0..f3 (float64), city (text)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4))
    cities = np.array(["Oslo", "Lima", "Pune", "Kyiv"])[rng.integers(0, 4, rows)]
    return pa.table({"id": np.arange(rows) + 1000, **{f: x[:, i] for i, f in enumerate(FEATURES)},
                     "city": cities.tolist()})


def write_table(table: pa.Table, path: Path) -> Path:
    """Write ``table`` in the format the name says: .csv, .jsonl, .parquet, optionally .gz for the text ones."""
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    if name.endswith(".parquet"):
        pq.write_table(table, path, row_group_size=137)  # odd row groups: mini-batches must not follow them
        return path
    if name.endswith(".csv"):
        sink = pa.BufferOutputStream()
        pacsv.write_csv(table, sink)
        data = sink.getvalue().to_pybytes()
    else:
        import orjson

        data = b"".join(orjson.dumps(r) + b"\n" for r in table.to_pylist())
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return path


def read_output(path: Path) -> pa.Table:
    if path.suffix == ".parquet":
        return pq.read_table(path)
    if path.suffix == ".csv":
        return pacsv.read_csv(path)
    import pyarrow.json as pajson

    return pajson.read_json(path)
