"""GRPCInferenceService against the running server with the stock ``tritonclient.grpc`` client: health,
metadata, configuration, statistics, the repository calls, bidirectional streaming, many clients at once,
and a message over the size limit. Answers are checked against the model run directly."""

from __future__ import annotations

import gc
import queue
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

MAX_BODY_BYTES = 4 * 1024 * 1024  # what the session server runs with (tests/e2e/conftest.py)


@pytest.fixture
def client(server) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.grpc_url) as found:
        yield found


@pytest.fixture(scope="module")
def reference(e2e_repo: Path):
    """The digits model run directly with onnxruntime: ``x -> (labels, probabilities)``."""
    session = ort.InferenceSession(str(e2e_repo / "digits" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        label, proba = session.run(["label", "probabilities"], {"input": x})
        return label, proba

    return run


def tensor(name: str, array: np.ndarray, datatype: str = "FP32") -> grpcclient.InferInput:
    item = grpcclient.InferInput(name, list(array.shape), datatype)
    item.set_data_from_numpy(array)
    return item


def infer_digits(client: grpcclient.InferenceServerClient, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    result = client.infer("digits", [tensor("input", x)])
    return result.as_numpy("label"), result.as_numpy("probabilities")


def infer_adder(client: grpcclient.InferenceServerClient, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    result = client.infer("adder", [tensor("a", a), tensor("b", b)])
    return result.as_numpy("sum"), result.as_numpy("total")


def assert_digits(got: tuple[np.ndarray, np.ndarray], expected: tuple[np.ndarray, np.ndarray]) -> None:
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-6)


# -- health and metadata -----------------------------------------------------------------------------------
def test_server_live_ready_and_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "inferd"
    assert meta["version"]
    assert {"binary_tensor_data", "model_repository", "model_configuration", "statistics"} <= set(meta["extensions"])


def test_model_ready_and_unknown_model_not_ready(client):
    assert client.is_model_ready("digits")
    assert client.is_model_ready("digits", "1")
    assert not client.is_model_ready("ghost")
    assert not client.is_model_ready("digits", "7")


def test_model_metadata(client):
    meta = client.get_model_metadata("digits", as_json=True)
    assert meta["name"] == "digits"
    assert meta["versions"] == ["1"]
    assert meta["platform"]
    inputs = [(i["name"], i["datatype"], [int(d) for d in i["shape"]]) for i in meta["inputs"]]
    assert inputs == [("input", "FP32", [-1, 64])]
    outputs = {o["name"]: (o["datatype"], [int(d) for d in o["shape"]]) for o in meta["outputs"]}
    assert outputs == {"label": ("INT64", [-1]), "probabilities": ("FP32", [-1, 10])}
    spam = client.get_model_metadata("spam", as_json=True)
    assert [(i["name"], i["datatype"]) for i in spam["inputs"]] == [("text", "BYTES")]


def test_model_metadata_of_an_unknown_model(client):
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("ghost")
    assert info.value.status() == "StatusCode.NOT_FOUND"
    assert "ghost" in info.value.message()


def test_model_config_in_tritons_form(client):
    config = client.get_model_config("digits", as_json=True)["config"]
    assert config["name"] == "digits"
    assert int(config["max_batch_size"]) > 0
    (model_input,) = config["input"]
    assert model_input["name"] == "input"
    assert model_input["data_type"] == "TYPE_FP32"
    assert [int(d) for d in model_input["dims"]] == [64]
    outputs = {o["name"]: (o["data_type"], [int(d) for d in o.get("dims", [])]) for o in config["output"]}
    assert outputs["probabilities"] == ("TYPE_FP32", [10])
    assert outputs["label"][0] == "TYPE_INT64"
    # the protobuf form answers the same
    message = client.get_model_config("digits").config
    assert message.max_batch_size == int(config["max_batch_size"])
    assert list(message.input[0].dims) == [64]
    # Triton's schema, as tritonclient compiled it: dynamic batching on (no delay) for ONNX, off for scikit-learn
    assert message.WhichOneof("scheduling_choice") == "dynamic_batching"
    assert message.dynamic_batching.max_queue_delay_microseconds == 0
    assert message.dynamic_batching.priority_levels == 1
    assert client.get_model_config("spam").config.WhichOneof("scheduling_choice") is None


def success_count(client: grpcclient.InferenceServerClient, model: str) -> int:
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"]
    (entry,) = [s for s in stats if s["name"] == model]
    # proto3 JSON leaves zero counters out and writes uint64 as strings
    return int(entry.get("inference_stats", {}).get("success", {}).get("count", 0))


def test_inference_statistics_grow(client, digits):
    before = success_count(client, "digits")
    for i in range(3):
        infer_digits(client, digits[0][i:i + 2])
    assert success_count(client, "digits") >= before + 3
    everything = client.get_inference_statistics(as_json=True)["model_stats"]
    assert {"digits", "spam", "eta", "ranker", "adder"} <= {s["name"] for s in everything}


# -- model repository --------------------------------------------------------------------------------------
def test_repository_index(client):
    index = client.get_model_repository_index(as_json=True)["models"]
    names = {m["name"] for m in index}
    assert {"digits", "spam", "eta", "ranker", "adder", "failing", "scratch"} <= names
    digits_entry = next(m for m in index if m["name"] == "digits")
    assert digits_entry["state"] == "READY"
    assert digits_entry["version"] == "1"


def test_unload_and_load(client):
    """Only ``scratch``: every other model is shared with the other tests of the session."""
    client.unload_model("scratch")
    assert not client.is_model_ready("scratch")
    a = np.ones((1, 3), np.float32)
    with pytest.raises(InferenceServerException) as info:
        client.infer("scratch", [tensor("a", a), tensor("b", a)])
    assert "scratch" in info.value.message()
    client.load_model("scratch")
    assert client.is_model_ready("scratch")
    result = client.infer("scratch", [tensor("a", a), tensor("b", a)])
    np.testing.assert_array_equal(result.as_numpy("sum"), a * 2)
    ready = client.get_model_repository_index(as_json=True)["models"]
    assert next(m for m in ready if m["name"] == "scratch")["state"] == "READY"


def test_loading_a_model_that_does_not_exist(client):
    with pytest.raises(InferenceServerException) as info:
        client.load_model("nothing-here")
    assert "nothing-here" in info.value.message()
    assert client.is_server_ready()


# -- streaming ---------------------------------------------------------------------------------------------
def test_stream_infer_answers_each_request_in_order_and_survives_a_bad_one(client, digits, reference):
    answers: queue.Queue[tuple[grpcclient.InferResult | None, InferenceServerException | None]] = queue.Queue()
    batches = [digits[0][i * 3:i * 3 + 1 + i % 3] for i in range(20)]  # 1 to 3 rows each
    bad = 9
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for i, x in enumerate(batches):
            if i == bad:
                x = np.zeros((1, 32), np.float32)  # the wrong width
            client.async_stream_infer("digits", [tensor("input", x)], request_id=str(i))
        received = [answers.get(timeout=30) for _ in batches]
    finally:
        client.stop_stream()
    for i, (result, error) in enumerate(received):
        if i == bad:
            assert result is None
            assert error is not None
            assert "input 'input': expected shape [-1, 64], got [1, 32]" in error.message()
            continue
        assert error is None, f"request {i}: {error}"
        assert result is not None
        assert result.get_response().id == str(i)
        got = (result.as_numpy("label"), result.as_numpy("probabilities"))
        assert_digits(got, reference(batches[i]))
    assert answers.empty()
    assert client.is_server_ready()


def test_stream_infer_to_several_models(client):
    answers: queue.Queue[tuple[grpcclient.InferResult | None, InferenceServerException | None]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        a = np.arange(6, dtype=np.float32).reshape(2, 3)
        client.async_stream_infer("adder", [tensor("a", a), tensor("b", a)], request_id="add")
        client.async_stream_infer("ghost", [tensor("x", a)], request_id="ghost")
        client.async_stream_infer("failing", [tensor("x", np.array([-1]), "INT64")], request_id="fail")
        client.async_stream_infer("failing", [tensor("x", np.array([4]), "INT64")], request_id="ok")
        received = [answers.get(timeout=30) for _ in range(4)]
    finally:
        client.stop_stream()
    (added, no_error), (_, unknown), (_, failed), (doubled, fine) = received
    assert no_error is None
    np.testing.assert_array_equal(added.as_numpy("sum"), a * 2)
    assert unknown is not None
    assert "ghost" in unknown.message()
    assert failed is not None
    assert "negative values are not allowed" in failed.message()
    assert fine is None
    assert doubled.as_numpy("y").tolist() == [8]


# -- many clients at once ----------------------------------------------------------------------------------
def test_concurrent_infers_from_a_thread_pool(server, digits, reference):
    threads, per_thread = 8, 25
    x_all = digits[0]

    def work(worker: int) -> int:
        rng = np.random.default_rng(worker)
        checked = 0
        with grpcclient.InferenceServerClient(server.grpc_url) as mine:
            for i in range(per_thread):
                if i % 2 == 0:
                    start = int(rng.integers(0, len(x_all) - 4))
                    x = x_all[start:start + 1 + i % 4]
                    assert_digits(infer_digits(mine, x), reference(x))
                else:
                    a = rng.normal(size=(1 + i % 5, 3)).astype(np.float32)
                    b = np.full_like(a, worker)
                    sums, totals = infer_adder(mine, a, b)
                    np.testing.assert_array_equal(sums, a + b)
                    np.testing.assert_allclose(totals, (a + b).sum(axis=1), rtol=1e-6)
                checked += 1
        return checked

    # tritonclient.http clients left by other tests close their gevent pool in __del__, which fails when the
    # cycle collector happens to run in one of these threads: collect them here, and not during the work.
    gc.collect()
    gc.disable()
    try:
        with ThreadPoolExecutor(threads) as pool:
            done = list(pool.map(work, range(threads)))
    finally:
        gc.enable()
    assert done == [per_thread] * threads


# -- size limit --------------------------------------------------------------------------------------------
def test_a_message_over_the_limit_is_refused_and_the_server_goes_on(server, client, digits, reference):
    rows = MAX_BODY_BYTES // (64 * 4) + 100
    big = np.zeros((rows, 64), np.float32)
    with pytest.raises(InferenceServerException) as info:
        client.infer("digits", [tensor("input", big)])
    assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert client.is_server_ready()
    x = digits[0][:4]
    assert_digits(infer_digits(client, x), reference(x))
    with grpcclient.InferenceServerClient(server.grpc_url) as fresh:
        assert fresh.is_server_live()
