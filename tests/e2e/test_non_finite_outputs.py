"""NaN and the infinities in a model's outputs: JSON cannot write them, so every JSON answer (V2 on the plain path
and on the general one, KServe V1, SageMaker JSON, async results) writes null; the binary tensor extension and gRPC
carry the values themselves. docs/platforms.md says so."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from fakes import write_model
from server_process import ServerProcess

ODD = """
import numpy as np

class Model:
    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}]
    outputs = [{"name": "y", "datatype": "FP32", "shape": [-1, 4]},
               {"name": "z", "datatype": "FP64", "shape": [-1]}]

    def predict(self, inputs):
        x = inputs["x"]
        rows = len(x)
        y = np.tile(np.array([np.nan, np.inf, -np.inf, 0.0], dtype=np.float32), (rows, 1))
        y[:, 3] = x[:, 0]
        return {"y": y, "z": np.full(rows, np.nan)}
"""

BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.5]}]}
NULLS = [None, None, None, 1.5]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("non_finite")
    write_model(root / "models", "odd", ODD)
    yield from ServerProcess(root / "models", root / "serve.log").serving()


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def outputs(body: dict) -> dict[str, list]:
    return {o["name"]: o["data"] for o in body["outputs"]}


def test_v2_json_writes_null_on_the_plain_path_and_the_general_one_alike(http):
    plain = http.post("/v2/models/odd/infer", json=BODY)
    general_body = {"inputs": [{**BODY["inputs"][0], "parameters": {"note": "not the plain form"}}]}
    general = http.post("/v2/models/odd/infer", json=general_body)
    assert plain.status_code == general.status_code == 200
    assert outputs(plain.json()) == outputs(general.json()) == {"y": NULLS, "z": [None]}
    assert plain.content == general.content


def test_v1_and_sagemaker_json_write_null(http):
    v1 = http.post("/v1/models/odd:predict", json={"instances": [[1.5]]})
    assert v1.status_code == 200, v1.text
    assert v1.json() == {"predictions": [{"y": NULLS, "z": None}]}
    sagemaker = http.post("/invocations", json={"instances": [[1.5]]})
    assert sagemaker.json() == v1.json()


def test_async_results_write_null(http):
    submitted = http.post("/v2/models/odd/infer-async", json=BODY)
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()["id"]
    deadline = time.monotonic() + 30
    while http.get(f"/v2/jobs/{job}").json()["status"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert http.get(f"/v2/jobs/{job}/result").content == http.post("/v2/models/odd/infer", json=BODY).content


def test_binary_data_and_grpc_carry_the_values_themselves(server):
    expected = np.array([[np.nan, np.inf, -np.inf, 1.5]], dtype=np.float32)
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        x = httpclient.InferInput("x", [1, 1], "FP32")
        x.set_data_from_numpy(np.array([[1.5]], dtype=np.float32))
        result = client.infer("odd", [x], outputs=[httpclient.InferRequestedOutput("y", binary_data=True)])
        np.testing.assert_array_equal(result.as_numpy("y"), expected)
    finally:
        client.close()
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        x = grpcclient.InferInput("x", [1, 1], "FP32")
        x.set_data_from_numpy(np.array([[1.5]], dtype=np.float32))
        np.testing.assert_array_equal(grpc.infer("odd", [x]).as_numpy("y"), expected)
    finally:
        grpc.close()


def test_the_docs_say_what_json_answers_carry():
    text = (Path(__file__).parents[2] / "docs" / "platforms.md").read_text()
    assert "NaN and the infinities" in text
    assert "null" in text


def test_csv_answers_write_the_words(http):
    answer = http.post("/invocations", json={"instances": [[1.5]]}, headers={"Accept": "text/csv"})
    assert answer.status_code == 200, answer.text
    assert answer.text.strip() == "nan,inf,-inf,1.5,nan"
