"""A request of 0 rows to a batched model, over every transport of the running server: answered as Triton answers
an empty batch (each output with 0 rows, its declared trailing shape and datatype) without running the model, or
400 when an output's shape after the batch dimension is free; never 500, and an async job is never retried."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

EMPTY_ADDER = {"inputs": [{"name": n, "datatype": "FP32", "shape": [0, 3], "data": []} for n in ("a", "b")]}


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def test_rest_json_answers_an_empty_batch_with_the_declared_trailing_shapes(http):
    reply = http.post("/v2/models/adder/infer", json={**EMPTY_ADDER, "id": "empty"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["id"] == "empty"
    assert [(o["name"], o["datatype"], o["shape"], o["data"]) for o in body["outputs"]] == [
        ("sum", "FP32", [0, 3], []), ("total", "FP64", [0], [])]


def test_an_empty_batch_does_not_run_the_model(http):
    def executions() -> int:
        stats = http.get("/v2/models/adder/stats").json()["model_stats"][0]
        return int(stats["execution_count"])

    before = executions()
    assert http.post("/v2/models/adder/infer", json=EMPTY_ADDER).status_code == 200
    assert executions() == before


def test_onnx_model_with_zero_rows(http):
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [0, 64], "data": []}]}
    reply = http.post("/v2/models/digits/infer", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.json()["outputs"][0]["shape"][0] == 0


def test_an_output_whose_trailing_shape_is_free_gets_400_naming_it(http):
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [0, 5], "data": []}]}
    reply = http.post("/v2/models/echo_fp32/infer", json=body)
    assert reply.status_code == 400, reply.text
    assert "'y'" in reply.json()["error"]
    assert "0 rows" in reply.json()["error"]


def test_rest_binary_with_tritonclient(server):
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        inputs = []
        for name in ("a", "b"):
            item = httpclient.InferInput(name, [0, 3], "FP32")
            item.set_data_from_numpy(np.empty((0, 3), dtype=np.float32), binary_data=True)
            inputs.append(item)
        outputs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in ("sum", "total")]
        result = client.infer("adder", inputs, outputs=outputs)
        assert result.as_numpy("sum").shape == (0, 3)  # (tritonclient makes an empty buffer float64 whatever
        assert result.as_numpy("total").shape == (0,)  # the datatype: the header says it)
        assert (result.get_output("sum")["datatype"], result.get_output("total")["datatype"]) == ("FP32", "FP64")
        assert result.get_output("sum")["parameters"] == {"binary_data_size": 0}
    finally:
        client.close()


def test_grpc_with_tritonclient(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        inputs = []
        for name in ("a", "b"):
            item = grpcclient.InferInput(name, [0, 3], "FP32")
            item.set_data_from_numpy(np.empty((0, 3), dtype=np.float32))
            inputs.append(item)
        result = client.infer("adder", inputs)
        assert result.as_numpy("sum").shape == (0, 3)
        assert result.as_numpy("total").shape == (0,)
        free = grpcclient.InferInput("x", [0, 5], "FP32")
        free.set_data_from_numpy(np.empty((0, 5), dtype=np.float32))
        with pytest.raises(InferenceServerException) as refused:
            client.infer("echo_fp32", [free])
        assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    finally:
        client.close()


def wait_finished(http: httpx.Client, job_id: str) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = http.get(f"/v2/jobs/{job_id}").json()
        if status["status"] in ("succeeded", "failed"):
            return dict(status)
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {status}")


def test_async_jobs_of_zero_rows_finish_at_the_first_attempt(http):
    ok = http.post("/v2/models/adder/infer-async", json=EMPTY_ADDER)
    assert ok.status_code == 202, ok.text
    status = wait_finished(http, ok.json()["id"])
    assert (status["status"], status["attempts"]) == ("succeeded", 1)
    result = http.get(f"/v2/jobs/{ok.json()['id']}/result").json()
    assert [o["shape"] for o in result["outputs"]] == [[0, 3], [0]]

    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [0, 5], "data": []}]}
    refused = http.post("/v2/models/echo_fp32/infer-async", json=body)
    assert refused.status_code == 202, refused.text
    status = wait_finished(http, refused.json()["id"])
    assert (status["status"], status["attempts"]) == ("failed", 1)
