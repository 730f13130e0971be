"""Decoupled models against a real ``inferd serve``: Triton's ``repeat_int32`` and a streaming fake through
tritonclient's gRPC stream (the final flag, the empty final response), as server-sent events over httpx, the
refusal of unary calls in Triton's words (tritonclient gRPC, httpx: tritonclient.http's gevent hub, finalised on
the gRPC stream's callback thread, raised into later tests), a model that fails mid-stream, cancellation, the bounded queue, and a
generative model's tokens through the same gRPC stream."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from fakes import ADDER, DECOUPLED, STREAMER, write_model
from generative_models import write_echo_llm
from server_process import ServerProcess
from triton_models import write_triton_models

Answer = tuple[Any, Any]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("decoupled") / "models"
    write_triton_models(root)
    write_model(root, "streamer", STREAMER, DECOUPLED)
    write_model(root, "sse_streamer", STREAMER, DECOUPLED)
    write_model(root, "narrow", STREAMER, DECOUPLED + "\n[queue]\nmax_size = 1\n")
    write_model(root, "adder", ADDER)
    write_echo_llm(root, "echo")
    return root


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(repo, tmp_path_factory.mktemp("logs") / "serve.log")
    process.start(timeout=120)
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.grpc_url) as triton:
        yield triton


def repeat_inputs(values: list[int], delay_ms: int = 0, wait_ms: int = 0) -> list[grpcclient.InferInput]:
    arrays = {"IN": np.array(values, dtype=np.int32), "DELAY": np.full(len(values), delay_ms, dtype=np.uint32),
              "WAIT": np.array([wait_ms], dtype=np.uint32)}
    inputs = []
    for name, array in arrays.items():
        tensor = grpcclient.InferInput(name, list(array.shape), "INT32" if name == "IN" else "UINT32")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def streamer_inputs(n: int) -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("n", [1], "INT32")
    tensor.set_data_from_numpy(np.array([n], dtype=np.int32))
    return [tensor]


def start(client: grpcclient.InferenceServerClient) -> queue.Queue[Answer]:
    answers: queue.Queue[Answer] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    return answers


def final_flag(result: grpcclient.InferResult) -> bool:
    return bool(result.get_response().parameters["triton_final_response"].bool_param)


def closed_count(repo: Path, model: str) -> int:
    marker = repo / model / "1" / "closed"
    for _ in range(1000):  # the model's generator is closed at its next response
        if marker.exists():
            count = int(marker.read_text())
            marker.unlink()
            return count
        time.sleep(0.01)
    raise AssertionError(f"model {model}'s generator was never closed")


def test_repeat_int32_answers_each_element_then_the_empty_final_response(client):
    answers = start(client)
    try:
        client.async_stream_infer("repeat_int32", repeat_inputs([100, 101, 102], delay_ms=5), request_id="r1",
                                  enable_empty_final_response=True)
        got = [answers.get(timeout=30) for _ in range(4)]
    finally:
        client.stop_stream()
    assert all(error is None for _, error in got)
    results = [result for result, _ in got]
    assert [r.as_numpy("OUT").tolist() for r in results[:3]] == [[100], [101], [102]]
    assert [r.as_numpy("IDX").tolist() for r in results[:3]] == [[0], [1], [2]]
    assert [final_flag(r) for r in results] == [False, False, False, True]
    empty = results[3].get_response()
    assert (empty.id, empty.model_name, list(empty.outputs)) == ("r1", "repeat_int32", [])


def test_without_the_empty_final_response_only_the_responses_come(client):
    answers = start(client)
    try:
        client.async_stream_infer("repeat_int32", repeat_inputs([7, 8]), outputs=[grpcclient.InferRequestedOutput(
            "OUT")])
        client.async_stream_infer("repeat_int32", repeat_inputs([]), enable_empty_final_response=False)
        client.async_stream_infer("adder", _adder_inputs())
        got = [answers.get(timeout=30) for _ in range(3)]
    finally:
        client.stop_stream()
    first, second, adder = (result for result, _ in got)
    assert first.as_numpy("OUT").tolist() == [7]
    assert first.as_numpy("IDX") is None  # only the output asked for
    assert second.as_numpy("OUT").tolist() == [8]
    assert adder.get_response().model_name == "adder"  # zero responses, and no final one, for the empty IN
    assert final_flag(adder)  # a model that is not decoupled: its one response is final, as in Triton


def _adder_inputs() -> list[grpcclient.InferInput]:
    inputs = []
    for name in ("a", "b"):
        tensor = grpcclient.InferInput(name, [1, 3], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 3), dtype=np.float32))
        inputs.append(tensor)
    return inputs


def test_unary_calls_get_tritons_refusal(client, server):
    with pytest.raises(InferenceServerException) as grpc_info:
        client.infer("repeat_int32", repeat_inputs([1]))
    assert str(grpc_info.value.status()) == "StatusCode.UNIMPLEMENTED"
    assert "ModelInfer RPC doesn't support models with decoupled transaction policy" in grpc_info.value.message()
    body = {"inputs": [{"name": "IN", "datatype": "INT32", "shape": [1], "data": [1]},
                       {"name": "DELAY", "datatype": "UINT32", "shape": [1], "data": [0]},
                       {"name": "WAIT", "datatype": "UINT32", "shape": [1], "data": [0]}]}
    http = httpx.post(f"{server.url}/v2/models/repeat_int32/infer", json=body, timeout=30)
    config = httpx.get(f"{server.url}/v2/models/repeat_int32/config", timeout=30).json()
    assert http.status_code == 501
    assert http.json()["error"].startswith("HTTP end point doesn't support models with decoupled transaction policy")
    assert config["model_transaction_policy"] == {"decoupled": True}
    assert client.get_model_config("repeat_int32").config.model_transaction_policy.decoupled is True


def test_a_model_that_raises_mid_stream_answers_an_error_and_the_stream_goes_on(client):
    answers = start(client)
    try:
        client.async_stream_infer("streamer", streamer_inputs(-2))
        got = [answers.get(timeout=30) for _ in range(3)]
        client.async_stream_infer("streamer", streamer_inputs(1), enable_empty_final_response=True)
        after = [answers.get(timeout=30) for _ in range(2)]
    finally:
        client.stop_stream()
    assert [r.as_numpy("i").tolist() for r, _ in got[:2]] == [[0], [1]]
    assert got[2][0] is None
    assert "broke after two responses" in got[2][1].message()
    assert after[0][0].as_numpy("i").tolist() == [0]
    assert final_flag(after[1][0])


def test_cancelling_the_stream_stops_the_model(client, repo):
    answers = start(client)
    client.async_stream_infer("streamer", streamer_inputs(-1))
    got = [answers.get(timeout=30) for _ in range(3)]
    client.stop_stream(cancel_requests=True)
    assert [r.as_numpy("i").tolist() for r, _ in got] == [[0], [1], [2]]
    assert closed_count(repo, "streamer") >= 3


def test_a_decoupled_model_is_under_the_bounded_queue(server, repo):
    with grpcclient.InferenceServerClient(server.grpc_url) as running, \
            grpcclient.InferenceServerClient(server.grpc_url) as waiting, \
            grpcclient.InferenceServerClient(server.grpc_url) as refused:
        first = start(running)
        running.async_stream_infer("narrow", streamer_inputs(-1))
        first.get(timeout=30)  # it runs: the one instance is busy
        second = start(waiting)
        waiting.async_stream_infer("narrow", streamer_inputs(1))  # waits: the queue holds one
        time.sleep(0.2)
        third = start(refused)
        refused.async_stream_infer("narrow", streamer_inputs(1))
        _, error = third.get(timeout=30)
        sse = httpx.post(f"{server.url}/v2/models/narrow/generate_stream", json={"n": 1}, timeout=30)
        running.stop_stream(cancel_requests=True)
        queued, queued_error = second.get(timeout=30)
        waiting.stop_stream()
        refused.stop_stream()
    assert "queue is full" in error.message()
    assert sse.status_code == 503
    assert "queue is full" in sse.json()["error"]
    assert sse.headers["retry-after"]
    assert queued_error is None
    assert queued.as_numpy("i").tolist() == [0]
    closed_count(repo, "narrow")


def sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield orjson.loads(line[6:])


def test_server_sent_events_of_a_decoupled_model(server):
    body = {"IN": [4, 5, 6], "DELAY": [0, 0, 0], "WAIT": 0, "id": "s1"}
    with httpx.stream("POST", f"{server.url}/v2/models/repeat_int32/generate_stream", json=body,
                      timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(sse_events(response))
    assert events == [{"model_name": "repeat_int32", "model_version": "1", "id": "s1", "OUT": v, "IDX": i}
                      for i, v in enumerate([4, 5, 6])]
    failing = httpx.post(f"{server.url}/v2/models/sse_streamer/generate_stream", json={"n": -2}, timeout=30)
    assert [orjson.loads(line[6:]) for line in failing.text.splitlines() if line][:2] == [
        {"model_name": "sse_streamer", "model_version": "1", "i": 0},
        {"model_name": "sse_streamer", "model_version": "1", "i": 1}]
    assert "broke after two responses" in failing.text.splitlines()[-2 if failing.text.endswith("\n\n") else -1]
    unknown = httpx.post(f"{server.url}/v2/models/repeat_int32/generate_stream", json={"OUT": [1]}, timeout=30)
    assert unknown.status_code == 400
    assert "unknown field 'OUT'" in unknown.json()["error"]


def test_closing_the_server_sent_events_stops_the_model(server, repo):
    with httpx.stream("POST", f"{server.url}/v2/models/sse_streamer/generate_stream", json={"n": -1},
                      timeout=30) as response:
        events = sse_events(response)
        assert [next(events)["i"] for _ in range(3)] == [0, 1, 2]
    assert closed_count(repo, "sse_streamer") >= 3


def test_a_generative_model_streams_its_tokens_over_the_grpc_stream(client):
    prompt = grpcclient.InferInput("text_input", [1], "BYTES")
    prompt.set_data_from_numpy(np.array([b"stream me"], dtype=object))
    answers = start(client)
    try:
        client.async_stream_infer("echo", [prompt], parameters={"max_tokens": 9})
        got = []
        while not got or not final_flag(got[-1]):
            result, error = answers.get(timeout=30)
            assert error is None
            got.append(result)
    finally:
        client.stop_stream()
    assert len(got) > 1
    assert b"".join(r.as_numpy("text_output")[0] for r in got) == b"stream me"
    assert got[-1].get_response().parameters["finish_reason"].string_param == "length"
