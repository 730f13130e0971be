"""Data capture in a real ``inferd serve``: sampled requests and responses as JSON Lines under dated folders,
none at 0 %, rotation by size, and a one-slot buffer under load that drops and counts but fails nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families

from fakes import ADDER, write_model
from server_process import ServerProcess

WIDE = """
class Model:
    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 65536]}]
    outputs = [{"name": "y", "datatype": "FP32", "shape": [-1, 65536]}]

    def predict(self, inputs):
        return {"y": inputs["x"]}
"""
"""Its captures are slow to encode (two tensors of 65,536 floats as JSON), its requests quick (binary)."""


def adder_body(i: int) -> dict[str, Any]:
    return {"id": f"body-{i}", "inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 3], "data": [i, i, i]},
        {"name": "b", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}


def capture(percent: float, extra: str = "") -> str:
    return f"[capture]\nenabled = true\nsample_percent = {percent}\n{extra}"


@pytest.fixture(scope="module")
def capture_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("capture")
    models = root / "models"
    write_model(models, "everything", ADDER, toml=capture(100))
    write_model(models, "nothing", ADDER, toml=capture(0))
    write_model(models, "uncaptured", ADDER)
    write_model(models, "rotating", ADDER, toml=capture(100, f'max_file_bytes = 1024\ndestination = "{root}/rot"\n'))
    process = ServerProcess(models, root / "serve.log", env={"INFERD_CAPTURE_DIR": str(root / "captured")})
    yield from process.serving(timeout=120)


def records(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted(folder.rglob("*.jsonl")) for line in path.read_text().splitlines()]


def wait_records(folder: Path, count: int, timeout: float = 15) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while len(found := records(folder)) < count:
        assert time.monotonic() < deadline, f"{len(found)} records of {count} after {timeout} s"
        time.sleep(0.05)
    return found


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def test_every_request_is_captured_at_100_percent(capture_server: ServerProcess) -> None:
    with httpx.Client(base_url=capture_server.url) as client:
        for i in range(5):
            reply = client.post("/v2/models/everything/infer", json=adder_body(i), headers={"X-Request-ID": f"r{i}"})
            assert reply.status_code == 200
    client = httpclient.InferenceServerClient(capture_server.url.removeprefix("http://"))
    inputs = [httpclient.InferInput(n, [1, 3], "FP32") for n in ("a", "b")]
    for item in inputs:
        item.set_data_from_numpy(np.array([[0.5, 1.5, 2.5]], dtype=np.float32), binary_data=True)
    client.infer("everything", inputs, headers={"X-Request-ID": "binary"})
    client.close()
    grpc = grpcclient.InferenceServerClient(capture_server.grpc_url)
    grpc_inputs = [grpcclient.InferInput(n, [1, 3], "FP32") for n in ("a", "b")]
    for item in grpc_inputs:
        item.set_data_from_numpy(np.array([[7, 8, 9]], dtype=np.float32))
    grpc.infer("everything", grpc_inputs, request_id="over-grpc", headers={"x-request-id": "grpc-7"})
    grpc.close()
    folder = capture_server.log_path.parent / "captured" / "everything" / "1"
    found = wait_records(folder, 7)
    assert [r["request_id"] for r in found] == ["r0", "r1", "r2", "r3", "r4", "binary", "grpc-7"]
    assert found[6]["request"]["id"] == "over-grpc"
    assert found[6]["response"]["outputs"][0]["data"] == [14.0, 16.0, 18.0]
    first = found[0]
    assert (first["model"], first["version"], first["request"]["id"]) == ("everything", "1", "body-0")
    assert first["request"]["inputs"] == adder_body(0)["inputs"]
    assert first["response"]["outputs"][0] == {"name": "sum", "datatype": "FP32", "shape": [1, 3],
                                               "data": [1.0, 2.0, 3.0]}
    assert found[5]["request"]["inputs"][0]["data"] == [0.5, 1.5, 2.5], "binary inputs in their JSON form"
    assert found[5]["response"]["outputs"][1]["data"] == [9.0]
    [path] = list(folder.rglob("*.jsonl"))
    year, month, day, hour = path.relative_to(folder).parts[:4]
    assert path.name.startswith(f"{year}{month}{day}T{hour}")
    assert metric(capture_server, "inferd_capture_records_total", model="everything", version="1") == 7
    assert metric(capture_server, "inferd_capture_dropped_total", model="everything", version="1") == 0


def test_nothing_is_captured_at_0_percent_or_without_capture(capture_server: ServerProcess) -> None:
    root = capture_server.log_path.parent / "captured"
    before = len(records(root / "everything"))
    with httpx.Client(base_url=capture_server.url) as client:
        for model in ("nothing", "uncaptured", "everything"):
            for i in range(20):
                assert client.post(f"/v2/models/{model}/infer", json=adder_body(i)).status_code == 200
    wait_records(root / "everything", before + 20)  # one writer, in order: the others' would be written by now
    assert not (root / "nothing").exists()
    assert not (root / "uncaptured").exists()


def test_files_rotate_by_size(capture_server: ServerProcess) -> None:
    with httpx.Client(base_url=capture_server.url) as client:
        for i in range(12):
            assert client.post("/v2/models/rotating/infer", json=adder_body(i)).status_code == 200
    folder = capture_server.log_path.parent / "rot" / "rotating" / "1"
    found = wait_records(folder, 12)
    assert [r["request"]["id"] for r in found] == [f"body-{i}" for i in range(12)]
    files = list(folder.rglob("*.jsonl"))
    assert len(files) >= 4, "each record is about 400 bytes: two fit in 1024"
    assert all(f.stat().st_size <= 1024 for f in files)


@pytest.fixture(scope="module")
def tiny_buffer_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("capture-tiny")
    write_model(root / "models", "wide", WIDE, toml=capture(100))
    process = ServerProcess(root / "models", root / "serve.log",
                            env={"INFERD_CAPTURE_DIR": str(root / "captured"), "INFERD_CAPTURE_BUFFER": "1"})
    yield from process.serving(timeout=120)


def test_a_full_buffer_drops_captures_and_fails_no_request(tiny_buffer_server: ServerProcess) -> None:
    row = np.random.default_rng(0).random((1, 65536), dtype=np.float32)
    header = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 65536],
                                     "parameters": {"binary_data_size": row.nbytes}}],
                         "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
    body = header + row.tobytes()
    sent = 200

    def post(client: httpx.Client) -> int:
        return client.post("/v2/models/wide/infer", content=body,
                           headers={"Inference-Header-Content-Length": str(len(header))}).status_code

    with httpx.Client(base_url=tiny_buffer_server.url, timeout=30) as client, ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: post(client), range(sent)))
    assert statuses == [200] * sent, "capture never fails a request"
    labels = {"model": "wide", "version": "1"}
    deadline = time.monotonic() + 30
    while (written := metric(tiny_buffer_server, "inferd_capture_records_total", **labels)) + \
            (dropped := metric(tiny_buffer_server, "inferd_capture_dropped_total", **labels)) < sent:
        assert time.monotonic() < deadline, f"written {written} + dropped {dropped} != {sent}"
        time.sleep(0.1)
    assert written + dropped == sent
    assert dropped > 0, "a one-slot buffer cannot keep up with 8 clients"
    assert len(records(tiny_buffer_server.log_path.parent / "captured")) == written
