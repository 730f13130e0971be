"""Dynamic batching with no queue delay, through a real ``inferd serve`` and raw sockets: an ONNX model runs
inline on the event loop, so only requests that arrive in the same turn of the loop can share a batch. Each
answer is checked against the scikit-learn model the ONNX file was converted from, and the model's statistics
say whether requests were merged (fewer executions than inferences)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from batch_models import write_onnx_classifier
from raw_http import post, read_responses
from server_process import ServerProcess

CLIENTS = 24


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Any]]:
    root = tmp_path_factory.mktemp("zero_delay") / "models"
    model = write_onnx_classifier(root, "clf")
    (root / "clf" / "model.toml").write_text("max_batch_size = 64\n\n[batching]\nenabled = true\n"
                                             "max_queue_delay_us = 0\n")
    process = ServerProcess(root, root.parent / "server.log")
    for started in process.serving(timeout=120):
        yield started, model


def _body(x: np.ndarray) -> bytes:
    return orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                                     "data": x.ravel().tolist()}], "outputs": [{"name": "probabilities"}]})


def _counts(server: ServerProcess) -> tuple[int, int]:
    stats = httpx.get(f"{server.url}/v2/models/clf/stats", timeout=10).json()["model_stats"][0]
    return stats["inference_count"], stats["execution_count"]  # rows inferred, model calls


def _burst(server: ServerProcess, xs: list[np.ndarray]) -> list[np.ndarray]:
    """One request per connection, all but their last byte sent first, then the last bytes back to back: the
    server finds several requests complete in one turn of its loop."""
    requests = [post("/v2/models/clf/infer", _body(x)) for x in xs]
    sockets = [socket.create_connection(("127.0.0.1", server.http_port), timeout=10) for _ in xs]
    try:
        for sock, request in zip(sockets, requests, strict=True):
            sock.sendall(request[:-1])
        for sock, request in zip(sockets, requests, strict=True):
            sock.sendall(request[-1:])
        answers = []
        for sock in sockets:
            ((status, _, content),) = read_responses(sock, 1)
            assert status == 200, content
            (output,) = orjson.loads(content)["outputs"]
            answers.append(np.array(output["data"], dtype=np.float32).reshape(output["shape"]))
        return answers
    finally:
        for sock in sockets:
            sock.close()


def test_requests_arriving_together_are_batched_and_each_gets_its_own_answer(served):
    server, model = served
    rng = np.random.default_rng(5)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for _ in range(150):  # one at a time: the server learns the model is fast enough to run inline
            x = rng.normal(size=(1, 4)).astype(np.float32)
            assert client.post("/v2/models/clf/infer", content=_body(x)).status_code == 200
    inferences_before, executions_before = _counts(server)
    sent = 0
    for _ in range(6):
        # one row each, as in warm-up: a request of more rows than the model has run would go to a thread
        xs = [rng.normal(size=(1, 4)).astype(np.float32) for _ in range(CLIENTS)]
        for x, answer in zip(xs, _burst(server, xs), strict=True):
            np.testing.assert_allclose(answer, model.predict_proba(x), rtol=1e-4, atol=1e-5)
        sent += CLIENTS
    inferences, executions = _counts(server)
    assert inferences - inferences_before == sent
    assert executions - executions_before < sent, "no two requests that arrived together shared a batch"
