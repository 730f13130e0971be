"""A model whose first load is still under way: 503 UNAVAILABLE saying it is loading (never 404 "unknown
model"), ready false, LOADING in the index; served once the load is done."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from fakes import ADDER, write_model
from server_process import ServerProcess

SLOW_LOAD = """
import time
from pathlib import Path

import numpy as np

class Model:
    inputs = [{"name": "x", "datatype": "INT64", "shape": [-1]}]
    outputs = [{"name": "y", "datatype": "INT64", "shape": [-1]}]

    def load(self, path):
        gate = Path(path) / "open"
        deadline = time.monotonic() + 60
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    def predict(self, inputs):
        return {"y": inputs["x"] + 1}
"""

BODY = {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [41]}]}


@pytest.fixture
def loading(tmp_path: Path):
    repo = tmp_path / "models"
    write_model(repo, "adder", ADDER)  # loads first (sorted by name), then the slow one holds the start-up
    gate = write_model(repo, "slowload", SLOW_LOAD) / "1"
    server = ServerProcess(repo, tmp_path / "serve.log").start(wait_ready=False)
    try:
        server.wait("/v2/health/live", timeout=60)
        yield server, gate
    finally:
        (gate / "open").touch()
        assert server.stop() == 0, server.log()


def test_a_model_still_loading_is_unavailable_not_unknown(loading):
    server, gate = loading
    with httpx.Client(base_url=server.url, timeout=10) as http:
        reply = http.post("/v2/models/slowload/infer", json=BODY)
        assert reply.status_code == 503, reply.text
        assert "model 'slowload' is loading" in reply.json()["error"]
        ready = http.get("/v2/models/slowload/ready")
        assert (ready.status_code, ready.json()["ready"]) == (503, False)
        assert http.get("/v2/models/slowload").status_code == 503
        index = {row["name"]: row for row in http.post("/v2/repository/index", json={}).json()}
        assert index["slowload"]["state"] == "LOADING"
        assert http.get("/v2/models/ghost/ready").status_code == 404  # a model that does not exist still is 404

        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            assert client.is_model_ready("slowload") is False
            with pytest.raises(InferenceServerException) as refused:
                client.get_model_metadata("slowload")
            assert refused.value.status() == "StatusCode.UNAVAILABLE"
        finally:
            client.close()

        (gate / "open").touch()
        deadline = time.monotonic() + 30
        while http.get("/v2/models/slowload/ready").status_code != 200:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        assert http.post("/v2/models/slowload/infer", json=BODY).json()["outputs"][0]["data"] == [42]
