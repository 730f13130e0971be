"""Triton's classification extension against a real server with the stock clients: ``class_count`` in
``tritonclient.http`` (binary data and JSON) and ``tritonclient.grpc``, and the ``classification`` parameter in
plain JSON, on the demo digits model with labels (``[labels]`` in its model.toml) and without."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from server_process import ServerProcess

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@pytest.fixture(scope="module")
def classes_server(e2e_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("classes") / "models"
    shutil.copytree(e2e_repo / "digits", root / "digits")
    labelled = shutil.copytree(e2e_repo / "digits", root / "named_digits")
    (labelled / "model.toml").write_text('[labels]\nprobabilities = "digits.txt"\n')
    (labelled / "digits.txt").write_text("\n".join(NAMES) + "\n")
    process = ServerProcess(root, tmp_path_factory.mktemp("classes-logs") / "serve.log")
    process.start(timeout=120)
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture(scope="module")
def rows(e2e_repo: Path, digits) -> tuple[np.ndarray, np.ndarray]:
    """Two digit images and the model's probabilities for them, run directly with onnxruntime."""
    x = digits[0][:2]
    session = ort.InferenceSession(str(e2e_repo / "digits" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {"input": x})
    return x, probabilities


def expected(probabilities: np.ndarray, count: int, labelled: bool) -> list[list[str]]:
    """What Triton answers: per row the top ``count`` as "value:index[:label]", the value as std::to_string writes
    a float."""
    answer = []
    for row in probabilities:
        top = sorted(range(len(row)), key=lambda i: (-row[i], i))[:count]
        answer.append([f"{float(row[i]):f}:{i}" + (f":{NAMES[i]}" if labelled else "") for i in top])
    return answer


def decoded(array: np.ndarray) -> list[list[str]]:
    """BYTES as text: tritonclient gives ``bytes`` from binary data, ``str`` from JSON."""
    return [[item.decode() if isinstance(item, bytes) else item for item in row] for row in array]


@pytest.mark.parametrize("model", ["named_digits", "digits"])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_http_class_count(classes_server, rows, model, binary):
    x, probabilities = rows
    client = httpclient.InferenceServerClient(classes_server.url.removeprefix("http://"))
    try:
        item = httpclient.InferInput("input", list(x.shape), "FP32")
        item.set_data_from_numpy(x, binary_data=binary)
        outputs = [httpclient.InferRequestedOutput("probabilities", binary_data=binary, class_count=3),
                   httpclient.InferRequestedOutput("label", binary_data=binary)]
        result = client.infer(model, [item], outputs=outputs)
    finally:
        client.close()
    classes = result.as_numpy("probabilities")
    assert classes.shape == (2, 3)
    assert result.get_output("probabilities")["datatype"] == "BYTES"
    assert decoded(classes) == expected(probabilities, 3, model == "named_digits")
    assert result.as_numpy("label").tolist() == probabilities.argmax(axis=1).tolist()


@pytest.mark.parametrize("model", ["named_digits", "digits"])
def test_tritonclient_grpc_class_count(classes_server, rows, model):
    x, probabilities = rows
    with grpcclient.InferenceServerClient(classes_server.grpc_url) as client:
        item = grpcclient.InferInput("input", list(x.shape), "FP32")
        item.set_data_from_numpy(x)
        result = client.infer(model, [item], outputs=[grpcclient.InferRequestedOutput("probabilities", class_count=12)])
        assert "classification" in client.get_server_metadata(as_json=True)["extensions"]
    classes = result.as_numpy("probabilities")
    assert classes.shape == (2, 10)  # 12 asked for, 10 classes: every class, as Triton clamps
    assert result.get_output("probabilities").datatype == "BYTES"
    assert decoded(classes) == expected(probabilities, 10, model == "named_digits")


def test_plain_json_and_the_refusals(classes_server, rows):
    x, probabilities = rows
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 64], "data": x.ravel().tolist()}],
            "outputs": [{"name": "probabilities", "parameters": {"classification": 1}}]}
    with httpx.Client(base_url=classes_server.url, timeout=30) as http:
        assert "classification" in http.get("/v2").json()["extensions"]
        response = http.post("/v2/models/named_digits/infer", json=body)
        assert response.status_code == 200, response.text
        (output,) = response.json()["outputs"]
        top = expected(probabilities, 1, True)
        assert output == {"name": "probabilities", "datatype": "BYTES", "shape": [2, 1], "data": top[0] + top[1]}
        body["outputs"] = [{"name": "probabilities", "parameters": {"classification": -2}}]
        refused = http.post("/v2/models/digits/infer", json=body)
        assert refused.status_code == 400
        assert "classification must be a non-negative integer" in refused.json()["error"]
    with grpcclient.InferenceServerClient(classes_server.grpc_url) as client:
        item = grpcclient.InferInput("input", list(x.shape), "FP32")
        item.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException, match="classification must be a non-negative integer"):
            client.infer("digits", [item], outputs=[grpcclient.InferRequestedOutput("probabilities", class_count=-1)])
