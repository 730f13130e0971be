"""The gRPC transport end to end: a real grpc.aio server on loopback, in a background thread with its own
event loop, over a DataPlane on the fake python models, called with tritonclient (its client and its own
compiled stubs), so wire compatibility is judged by Triton's client, not by our messages."""

from __future__ import annotations

import asyncio
import queue
import socket
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import grpc
import ml_dtypes
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from echo_models import echo_name, write_echo_models
from fakes import write_model
from inferd.dataplane import DataPlane
from inferd.inference import InferenceResponse, ResponseOutput
from inferd.repository import ModelRepository
from inferd.server.grpc.generated import grpc_service_pb2
from inferd.server.grpc.server import GrpcBindError, grpc_address, start_grpc_server, stop_grpc_server
from inferd.server.grpc.servicer import CONTENTS_FIELD, decode_infer_request, encode_infer_response
from inferd.tensors import DATATYPES

A = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
B = np.array([[1, 1, 1], [2, 2, 2]], dtype=np.float32)
MAX_MESSAGE = 1024 * 1024


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThreadedServer:
    """The real gRPC server on its own event loop in a background thread, on a free loopback port."""

    def __init__(self, dataplane: DataPlane, max_message_bytes: int = MAX_MESSAGE) -> None:
        self.port = free_port()
        self.url = f"127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc-test-server", daemon=True)
        self._thread.start()
        self._server = self.run(start_grpc_server(dataplane, "127.0.0.1", self.port, max_message_bytes))

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    def stop(self) -> None:
        self.run(stop_grpc_server(self._server, grace=1))
        self.run(self._loop.shutdown_asyncgens())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture
def server(dataplane: DataPlane) -> Iterator[ThreadedServer]:
    running = ThreadedServer(dataplane)
    yield running
    running.stop()


@pytest.fixture
def client(server: ThreadedServer) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.url) as triton:
        yield triton


@pytest.fixture
def stub(server: ThreadedServer) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    """tritonclient's own compiled stub, for requests its high-level client never builds."""
    with grpc.insecure_channel(server.url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def echo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for the whole module over an echo model per datatype."""
    root = tmp_path_factory.mktemp("echo")
    write_echo_models(root)
    plane = DataPlane(ModelRepository(root))
    asyncio.run(plane.start())
    running = ThreadedServer(plane)
    yield running.url
    running.stop()
    plane.close()


def adder_inputs(a: np.ndarray = A, b: np.ndarray = B, b_datatype: str = "FP32") -> list[grpcclient.InferInput]:
    first = grpcclient.InferInput("a", list(a.shape), "FP32")
    first.set_data_from_numpy(a)
    second = grpcclient.InferInput("b", list(b.shape), b_datatype)
    second.set_data_from_numpy(b)
    return [first, second]


def status_of(info: pytest.ExceptionInfo[InferenceServerException]) -> str:
    """tritonclient's InferenceServerException.status() is ``str(grpc.StatusCode.X)``: "StatusCode.X"."""
    return str(info.value.status())


def raw_request(model: str, inputs: list[tuple[str, str, list[int]]],
                raw: list[bytes]) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model, raw_input_contents=raw)
    for name, datatype, shape in inputs:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
    return request


def rpc_error(call: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request)
    return info.value


# -- health, metadata, configuration ---------------------------------------------------------------------
def test_health(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("adder")
    assert client.is_model_ready("adder", "1")
    assert not client.is_model_ready("adder", "2")
    assert not client.is_model_ready("nope")  # as Triton: unknown is not ready, not an error


def test_model_ready_with_a_malformed_version_is_invalid(client):
    with pytest.raises(InferenceServerException, match="failed to get model version from specified version string") as info:
        client.is_model_ready("adder", "latest")
    assert status_of(info) == "StatusCode.INVALID_ARGUMENT"


def test_server_metadata(client):
    metadata = client.get_server_metadata()
    assert metadata.name == "inferd"
    assert metadata.version
    as_json = client.get_server_metadata(as_json=True)
    assert as_json["name"] == "inferd"


def test_model_metadata(client):
    metadata = client.get_model_metadata("adder")
    assert (metadata.name, list(metadata.versions), metadata.platform) == ("adder", ["1"], "python")
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("a", "FP32", [-1, 3]), ("b", "FP32", [-1, 3])]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("sum", "FP32", [-1, 3]), ("total", "FP64", [-1])]
    assert client.get_model_metadata("adder", as_json=True)["inputs"][0]["name"] == "a"


def test_model_metadata_of_an_unknown_model_is_not_found(client):
    with pytest.raises(InferenceServerException, match="Request for unknown model: 'nope' is not found") as info:
        client.get_model_metadata("nope")
    assert status_of(info) == "StatusCode.NOT_FOUND"


def test_model_config_in_triton_form(client):
    config = client.get_model_config("adder").config
    assert (config.name, config.platform, config.backend, config.max_batch_size) == (
        "adder", "python", "python", 4096)
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("a", 11, [3]), ("b", 11, [3])]  # TYPE_FP32; the batch dimension is implied by max_batch_size
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [("sum", 11, [3]), ("total", 12, [])]
    as_json = client.get_model_config("adder", as_json=True)["config"]
    assert as_json["input"][0]["data_type"] == "TYPE_FP32"
    assert as_json["output"][1]["data_type"] == "TYPE_FP64"


def test_model_config_says_type_string_for_bytes(echo_url):
    with grpcclient.InferenceServerClient(echo_url) as client:
        config = client.get_model_config(echo_name("BYTES"), as_json=True)["config"]
    assert config["input"][0]["data_type"] == "TYPE_STRING"
    assert config["input"][0]["dims"] == ["-1"]  # protobuf JSON writes int64 as strings


# -- inference ----------------------------------------------------------------------------------------------
def test_infer_with_raw_contents(client):
    result = client.infer("adder", adder_inputs(), request_id="req-7")
    np.testing.assert_array_equal(result.as_numpy("sum"), A + B)
    np.testing.assert_array_equal(result.as_numpy("total"), [9.0, 21.0])
    assert result.as_numpy("total").dtype == np.float64
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("adder", "1", "req-7")
    assert [o.name for o in response.outputs] == ["sum", "total"]


def test_requested_outputs_are_honoured(client):
    result = client.infer("adder", adder_inputs(), outputs=[grpcclient.InferRequestedOutput("total")])
    assert [o.name for o in result.get_response().outputs] == ["total"]
    assert result.as_numpy("sum") is None
    np.testing.assert_array_equal(result.as_numpy("total"), [9.0, 21.0])


def test_infer_with_an_explicit_version_and_parameters(client):
    result = client.infer("adder", adder_inputs(), model_version="1", parameters={"note": "x", "n": 3})
    assert result.get_response().model_version == "1"


def test_infer_with_typed_contents(stub):
    request = service_pb2.ModelInferRequest(model_name="adder", id="typed")
    for name, values in (("a", A), ("b", B)):
        tensor = request.inputs.add(name=name, datatype="FP32", shape=list(values.shape))
        tensor.contents.fp32_contents.extend(values.ravel().tolist())
    response = stub.ModelInfer(request)
    assert response.id == "typed"
    assert len(response.raw_output_contents) == 2
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("sum", "FP32", [2, 3]), ("total", "FP64", [2])]
    np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[0], "<f4").reshape(2, 3), A + B)


ROUND_TRIP: dict[str, np.ndarray] = {
    "BOOL": np.array([[True, False, True], [False, False, True]]),
    **{
        datatype: np.array([[info.min, 0, info.max], [1, 2, 3]], dtype=dtype)
        for datatype, dtype in [
            ("UINT8", np.uint8), ("UINT16", np.uint16), ("UINT32", np.uint32), ("UINT64", np.uint64),
            ("INT8", np.int8), ("INT16", np.int16), ("INT32", np.int32), ("INT64", np.int64),
        ]
        for info in [np.iinfo(dtype)]
    },
    "FP16": np.array([[-1.5, 0, 65504], [np.inf, 0.25, -0.0]], dtype=np.float16),
    "FP32": np.array([[-1.5, 0, 3.4e38], [np.inf, 1e-30, 7.25]], dtype=np.float32),
    "FP64": np.array([[-1.5, 0, 1.7e308], [np.inf, 1e-300, 7.25]], dtype=np.float64),
    "BF16": np.array([[1.0, -2.5, 0.15625], [2.0**100, -1.0, 256.0]], dtype=np.float32),  # tritonclient: float32
    "BYTES": np.array([[b"text", "\u00fcn\u00efcode".encode(), b""], [b"\x00\xff\xfe binary", b"a", b"bc"]],
                      dtype=object),
}


def test_the_round_trip_covers_every_datatype():
    assert set(ROUND_TRIP) == set(DATATYPES)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_every_datatype_round_trips_as_raw_contents(echo_url, datatype):
    data = ROUND_TRIP[datatype]
    item = grpcclient.InferInput("x", list(data.shape), datatype)
    item.set_data_from_numpy(data)
    with grpcclient.InferenceServerClient(echo_url) as client:
        result = client.infer(echo_name(datatype), [item])
    output = result.get_response().outputs[0]
    assert (output.datatype, list(output.shape)) == (datatype, [2, 3])
    got = result.as_numpy("y")
    if datatype == "BF16":  # the bytes on the wire are bfloat16; tritonclient widens them to float32
        np.testing.assert_array_equal(np.frombuffer(result.get_response().raw_output_contents[0],
                                                    ml_dtypes.bfloat16).reshape(2, 3).astype(np.float32), data)
    assert got.shape == data.shape
    assert got.tolist() == data.tolist()


@pytest.mark.parametrize("datatype", sorted(CONTENTS_FIELD))
def test_every_typed_contents_field_is_read(echo_url, datatype):
    data = ROUND_TRIP[datatype]
    request = service_pb2.ModelInferRequest(model_name=echo_name(datatype))
    tensor = request.inputs.add(name="x", datatype=datatype, shape=list(data.shape))
    getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(data.ravel().tolist())
    with grpc.insecure_channel(echo_url) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    result = grpcclient.InferResult(response)
    assert result.as_numpy("y").tolist() == data.tolist()


@pytest.mark.parametrize("datatype", ["FP16", "BF16"])
def test_half_precision_has_no_typed_contents(echo_url, datatype):
    request = service_pb2.ModelInferRequest(model_name=echo_name(datatype))
    tensor = request.inputs.add(name="x", datatype=datatype, shape=[1, 1])
    tensor.contents.fp32_contents.append(1.0)
    with grpc.insecure_channel(echo_url) as channel:
        error = rpc_error(service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == f"input 'x': {datatype} has no typed contents field; send it in raw_input_contents"


# -- errors -------------------------------------------------------------------------------------------------
def test_unknown_model_is_not_found(client):
    with pytest.raises(InferenceServerException, match="Request for unknown model: 'nope' is not found") as info:
        client.infer("nope", adder_inputs())
    assert status_of(info) == "StatusCode.NOT_FOUND"


@pytest.mark.parametrize(
    ("b", "datatype", "message"),
    [
        (np.ones((2, 4), np.float32), "FP32", r"input 'b': expected shape \[-1, 3\], got \[2, 4\]"),
        (np.ones((2, 3), np.int32), "INT32", "input 'b': expected datatype FP32, got INT32"),
        (np.ones((1, 3), np.float32), "FP32", "inputs disagree on the batch size: 'a' has 2, 'b' has 1"),
    ],
)
def test_a_request_that_does_not_fit_the_model_is_invalid(client, b, datatype, message):
    with pytest.raises(InferenceServerException, match=message) as info:
        client.infer("adder", adder_inputs(b=b, b_datatype=datatype))
    assert status_of(info) == "StatusCode.INVALID_ARGUMENT"
    assert client.infer("adder", adder_inputs()).as_numpy("sum") is not None  # still serving


def test_a_model_that_raises_is_internal_and_the_next_call_works(client):
    item = grpcclient.InferInput("x", [2], "INT64")
    item.set_data_from_numpy(np.array([1, -1], dtype=np.int64))
    with pytest.raises(InferenceServerException, match="negative values are not allowed") as info:
        client.infer("failing", [item])
    assert status_of(info) == "StatusCode.INTERNAL"
    item.set_data_from_numpy(np.array([1, 2], dtype=np.int64))
    assert client.infer("failing", [item]).as_numpy("y").tolist() == [2, 4]


def test_an_unexpected_exception_is_internal_and_the_server_keeps_serving(client, dataplane, monkeypatch):
    def broken() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(dataplane, "server_metadata", broken)
    with pytest.raises(InferenceServerException, match="internal error: RuntimeError: boom") as info:
        client.get_server_metadata()
    assert status_of(info) == "StatusCode.INTERNAL"
    monkeypatch.undo()
    assert client.get_server_metadata().name == "inferd"


def test_one_raw_entry_per_input_is_required(stub):
    request = raw_request("adder", [("a", "FP32", [2, 3]), ("b", "FP32", [2, 3])], [A.tobytes()])
    error = rpc_error(stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "the request has 1 raw_input_contents entries for 2 inputs" in error.details()


def test_raw_contents_of_the_wrong_length_are_invalid(stub):
    request = raw_request("adder", [("a", "FP32", [2, 3]), ("b", "FP32", [2, 3])], [A.tobytes(), b"\0" * 20])
    error = rpc_error(stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "input 'b': shape [2, 3] of FP32 needs 24 bytes but 20 came"


def test_contents_and_raw_contents_together_are_invalid(stub):
    request = raw_request("adder", [("a", "FP32", [2, 3]), ("b", "FP32", [2, 3])], [A.tobytes(), B.tobytes()])
    request.inputs[1].contents.fp32_contents.extend([1.0] * 6)
    error = rpc_error(stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == ("contents field must not be specified when using raw_input_contents for 'b' "
                               "for model 'adder'; send one or the other")


def test_typed_contents_in_the_wrong_field_are_invalid(stub):
    request = service_pb2.ModelInferRequest(model_name="adder")
    request.inputs.add(name="a", datatype="FP32", shape=[1, 3]).contents.fp64_contents.extend([1.0, 2.0, 3.0])
    error = rpc_error(stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "input 'a': FP32 data goes in contents.fp32_contents, got fp64_contents"


def test_typed_contents_with_the_wrong_count_are_invalid(stub):
    request = service_pb2.ModelInferRequest(model_name="adder")
    for name in "ab":
        request.inputs.add(name=name, datatype="FP32", shape=[2, 3]).contents.fp32_contents.extend([1.0] * 5)
    error = rpc_error(stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'a': shape [2, 3] needs 6 elements but the data has 5" in error.details()


def test_an_unknown_datatype_is_invalid(stub):
    request = raw_request("adder", [("a", "FLOAT", [2, 3])], [A.tobytes()])
    error = rpc_error(stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("input 'a': unknown datatype 'FLOAT'; expected one of BOOL, UINT8")


def test_a_message_over_the_limit_is_refused(dataplane):
    server = ThreadedServer(dataplane, max_message_bytes=1024)
    try:
        big = np.ones((100, 3), np.float32)
        with grpcclient.InferenceServerClient(server.url) as client:
            with pytest.raises(InferenceServerException) as info:
                client.infer("adder", adder_inputs(big, big))
            assert status_of(info) == "StatusCode.RESOURCE_EXHAUSTED"
            assert client.infer("adder", adder_inputs()).as_numpy("sum") is not None
    finally:
        server.stop()


def test_calls_inferd_does_not_serve_are_unimplemented(client):
    with pytest.raises(InferenceServerException) as info:
        client.get_log_settings()
    assert status_of(info) == "StatusCode.UNIMPLEMENTED"


# -- streaming ----------------------------------------------------------------------------------------------
def test_stream_answers_every_request_and_survives_a_bad_one(client):
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        client.async_stream_infer("adder", adder_inputs(), request_id="1")
        client.async_stream_infer("adder", adder_inputs(b=np.ones((2, 4), np.float32)), request_id="2")
        client.async_stream_infer("nope", adder_inputs(), request_id="3")
        client.async_stream_infer("adder", adder_inputs(a=B), request_id="4")
        got = [answers.get(timeout=10) for _ in range(4)]
    finally:
        client.stop_stream()
    (first, no_error), (_, bad_shape), (_, unknown), (last, no_error_either) = got
    assert no_error is None
    assert no_error_either is None
    assert first.get_response().id == "1"
    np.testing.assert_array_equal(first.as_numpy("sum"), A + B)
    assert isinstance(bad_shape, InferenceServerException)
    assert bad_shape.message() == r"input 'b': expected shape [-1, 3], got [2, 4]"
    assert "Request for unknown model: 'nope' is not found" in unknown.message()
    assert last.get_response().id == "4"
    np.testing.assert_array_equal(last.as_numpy("sum"), B + B)


def test_stream_errors_echo_the_request_id(stub):
    responses = list(stub.ModelStreamInfer(iter([service_pb2.ModelInferRequest(model_name="nope", id="r9")])))
    assert len(responses) == 1
    assert "Request for unknown model: 'nope' is not found" in responses[0].error_message
    assert (responses[0].infer_response.model_name, responses[0].infer_response.id) == ("nope", "r9")


# -- request ids: x-request-id in the trailing metadata, as the HTTP header -----------------------------------
def _request_id(metadata: Any) -> str | None:
    return dict(metadata or ()).get("x-request-id")


def test_a_call_returns_the_callers_request_id(stub):
    request = raw_request("adder", [("a", "FP32", [2, 3]), ("b", "FP32", [2, 3])], [A.tobytes(), B.tobytes()])
    _, call = stub.ModelInfer.with_call(request, metadata=(("x-request-id", "order-17"),))
    assert _request_id(call.trailing_metadata()) == "order-17"


def test_a_call_without_one_gets_a_new_request_id_each_time(stub):
    ids = {_request_id(stub.ServerLive.with_call(service_pb2.ServerLiveRequest())[1].trailing_metadata())
           for _ in range(3)}
    assert len(ids) == 3
    assert all(rid is not None and len(rid) == 32 and int(rid, 16) for rid in ids)


def test_a_failed_call_carries_its_request_id_and_an_unusable_one_is_replaced(stub):
    error = rpc_error(lambda request: stub.ModelInfer(request, metadata=(("x-request-id", "r-404"),)),
                      raw_request("nope", [], []))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert _request_id(error.trailing_metadata()) == "r-404"
    _, call = stub.ServerLive.with_call(service_pb2.ServerLiveRequest(), metadata=(("x-request-id", "x" * 200),))
    assert len(_request_id(call.trailing_metadata()) or "") == 32  # over 128 characters: a new id instead


def test_a_stream_has_one_request_id(stub):
    call = stub.ModelStreamInfer(iter([service_pb2.ModelInferRequest(model_name="nope")] * 2),
                                 metadata=(("x-request-id", "stream-1"),))
    assert len(list(call)) == 2
    assert _request_id(call.trailing_metadata()) == "stream-1"


def test_stream_survives_an_unexpected_exception(client, dataplane, monkeypatch):
    def broken(*args: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(dataplane, "stream", broken)
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        client.async_stream_infer("adder", adder_inputs())
        _, error = answers.get(timeout=10)
        assert error.message() == "internal error: RuntimeError: boom"
        monkeypatch.undo()
        client.async_stream_infer("adder", adder_inputs())
        result, error = answers.get(timeout=10)
    finally:
        client.stop_stream()
    assert error is None
    np.testing.assert_array_equal(result.as_numpy("sum"), A + B)


# -- statistics and repository ------------------------------------------------------------------------------
def test_statistics_count_successes_failures_and_batches(client):
    client.infer("adder", adder_inputs())
    with pytest.raises(InferenceServerException):
        client.infer("adder", adder_inputs(b=np.ones((2, 4), np.float32)))
    stats = client.get_inference_statistics("adder").model_stats
    assert [(s.name, s.version) for s in stats] == [("adder", "1")]
    adder = stats[0]
    assert (adder.inference_count, adder.execution_count) == (2, 1)
    assert adder.last_inference > 0
    assert (adder.inference_stats.success.count, adder.inference_stats.fail.count) == (1, 1)
    assert adder.inference_stats.compute_infer.ns > 0
    assert [b.batch_size for b in adder.batch_stats] == [2]
    every = client.get_inference_statistics(as_json=True)["model_stats"]
    assert [s["name"] for s in every] == ["adder", "failing"]
    assert client.get_inference_statistics("adder", "1").model_stats[0].inference_count == 2


def test_statistics_of_an_unknown_model_is_not_found(client):
    with pytest.raises(InferenceServerException) as info:
        client.get_inference_statistics("nope")
    assert status_of(info) == "StatusCode.NOT_FOUND"


def test_repository_index(client, stub):
    index = client.get_model_repository_index().models
    assert [(m.name, m.version, m.state) for m in index] == [("adder", "1", "READY"), ("failing", "1", "READY")]
    client.unload_model("failing")
    ready = stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(ready=True)).models
    assert [m.name for m in ready] == ["adder"]


def test_unload_and_load(client):
    client.unload_model("adder")
    assert not client.is_model_ready("adder")
    with pytest.raises(InferenceServerException, match="model 'adder' is not ready") as info:
        client.infer("adder", adder_inputs())
    assert status_of(info) == "StatusCode.UNAVAILABLE"
    client.load_model("adder")
    assert client.is_model_ready("adder")
    assert client.infer("adder", adder_inputs()).as_numpy("sum") is not None


def test_unloading_a_model_that_is_not_loaded_is_not_found(client):
    client.unload_model("adder")
    with pytest.raises(InferenceServerException, match="model 'adder' is not loaded") as info:
        client.unload_model("adder")
    assert status_of(info) == "StatusCode.NOT_FOUND"


def test_a_failed_load_answers_an_error_with_the_reason(client, python_repo: Path):
    write_model(python_repo, "broken", "raise RuntimeError('cannot import this')\n")
    with pytest.raises(InferenceServerException, match="failed to load model 'broken': version 1: .*"
                                                       "RuntimeError: cannot import this") as info:
        client.load_model("broken")
    assert status_of(info) == "StatusCode.FAILED_PRECONDITION"
    assert not client.is_model_ready("broken")
    assert client.is_model_ready("adder")


def test_loading_a_model_not_in_the_repository_is_not_found(client):
    with pytest.raises(InferenceServerException, match="no model 'nope' in repository") as info:
        client.load_model("nope")
    assert status_of(info) == "StatusCode.NOT_FOUND"


def test_a_load_with_a_config_applies_it_for_this_load(client):
    client.load_model("adder", config='{"max_batch_size": "8"}')  # protobuf's JSON: an int64 may be a string
    assert client.get_model_config("adder").config.max_batch_size == 8
    client.load_model("adder")  # without it: the model's own configuration again
    assert client.get_model_config("adder").config.max_batch_size == 4096


def test_a_load_with_unknown_parameters_is_refused(client):
    with pytest.raises(InferenceServerException, match="failed to load 'adder': unknown load parameter 'x'") as info:
        client.load_model("adder", files={"x": b"1"})
    assert status_of(info) == "StatusCode.INVALID_ARGUMENT"
    assert client.is_model_ready("adder")


# -- server -------------------------------------------------------------------------------------------------
def test_a_port_in_use_is_a_clear_error(dataplane):
    async def start_on(port: int) -> None:
        await start_grpc_server(dataplane, "127.0.0.1", port, MAX_MESSAGE)

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(GrpcBindError, match=f"gRPC port {port} on 127.0.0.1 is in use"):
            asyncio.run(start_on(port))


def test_grpc_address_brackets_ipv6():
    assert grpc_address("127.0.0.1", 8001) == "127.0.0.1:8001"
    assert grpc_address("::", 8001) == "[::]:8001"
    assert grpc_address("[::1]", 8001) == "[::1]:8001"


# -- translation, message level -----------------------------------------------------------------------------
def test_request_parameters_become_a_plain_dict():
    triton = service_pb2.ModelInferRequest(model_name="m")
    triton.parameters["flag"].bool_param = True
    triton.parameters["n"].int64_param = -3
    triton.parameters["s"].string_param = "x"
    triton.parameters["d"].double_param = 0.5
    triton.parameters["u"].uint64_param = 2**64 - 1
    output = triton.outputs.add(name="y")
    output.parameters["classification"].int64_param = 2
    request = decode_infer_request(grpc_service_pb2.ModelInferRequest.FromString(triton.SerializeToString()))
    assert request.parameters == {"flag": True, "n": -3, "s": "x", "d": 0.5, "u": 2**64 - 1}
    assert request.outputs is not None
    assert (request.outputs[0].name, request.outputs[0].parameters) == ("y", {"classification": 2})
    assert (request.id, request.model_version, request.inputs) == (None, None, [])


def test_response_parameters_reach_tritonclient():
    response = InferenceResponse("m", "1", [ResponseOutput("y", "INT32", [2], np.array([1, 2], np.int32),
                                                           {"unit": "cm"})],
                                 id="r", parameters={"flag": False, "n": 2**63, "d": 1.5, "neg": -1})
    wire = encode_infer_response(response).SerializeToString()
    result = grpcclient.InferResult(service_pb2.ModelInferResponse.FromString(wire))
    as_json = result.get_response(as_json=True)
    assert as_json["parameters"] == {"flag": {"bool_param": False}, "n": {"uint64_param": str(2**63)},
                                     "d": {"double_param": 1.5}, "neg": {"int64_param": "-1"}}
    assert as_json["outputs"][0]["parameters"] == {"unit": {"string_param": "cm"}}
    assert result.as_numpy("y").tolist() == [1, 2]


def test_a_parameter_grpc_cannot_carry_is_an_error():
    response = InferenceResponse("m", "1", [], parameters={"bad": [1, 2]})
    with pytest.raises(Exception, match="parameter 'bad' is list; gRPC carries bool, int, float or str"):
        encode_infer_response(response)
