"""What Triton's own client examples rely on, with the stock ``tritonclient`` over HTTP and gRPC against a real
server holding models shaped like Triton's qa models (tests/triton_models.py): duplicate requested outputs,
``max_batch_size = 0``, input formats in the configuration, and the error phrases Triton's clients match on."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.http.aio as aiohttpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from server_process import ServerProcess
from triton_models import write_triton_models


@pytest.fixture(scope="module")
def triton_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("triton") / "models"
    write_triton_models(root)
    return root


@pytest.fixture(scope="module")
def server(triton_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from ServerProcess(triton_repo, tmp_path_factory.mktemp("logs") / "serve.log").serving(timeout=120)


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    yield client
    client.close()


@pytest.fixture
def grpc_client(server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        yield client


@pytest.fixture
def stub(server: ServerProcess) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.grpc_url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def simple_inputs(module, rows: int = 1) -> list:
    a = np.arange(16 * rows, dtype=np.int32).reshape(rows, 16)
    inputs = [module.InferInput("INPUT0", [rows, 16], "INT32"), module.InferInput("INPUT1", [rows, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(np.ones_like(a))
    return inputs


# -- duplicate output names --------------------------------------------------------------------------------
def test_an_output_asked_for_twice_is_refused_over_http(http):
    outputs = [httpclient.InferRequestedOutput("OUTPUT0"), httpclient.InferRequestedOutput("OUTPUT0")]
    with pytest.raises(InferenceServerException, match="output 'OUTPUT0' is requested more than once") as info:
        http.infer("simple", simple_inputs(httpclient), outputs=outputs)
    assert info.value.status() == "400"
    json_outputs = [httpclient.InferRequestedOutput("OUTPUT1", binary_data=False)] * 2
    with pytest.raises(InferenceServerException, match="'OUTPUT1' is requested more than once"):
        http.infer("simple", simple_inputs(httpclient), outputs=json_outputs)


def test_an_output_asked_for_twice_is_refused_over_grpc(grpc_client):
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("OUTPUT0")]
    with pytest.raises(InferenceServerException, match="output 'OUTPUT0' is requested more than once") as info:
        grpc_client.infer("simple", simple_inputs(grpcclient), outputs=outputs)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    answer = grpc_client.infer("simple", simple_inputs(grpcclient), outputs=outputs[:1])  # once is fine
    assert answer.as_numpy("OUTPUT0")[0, 3] == 4


# -- max_batch_size = 0: no batch dimension ----------------------------------------------------------------
def test_a_model_without_a_batch_dimension_is_configured_as_triton_states_it(http, grpc_client):
    config = http.get_model_config("string_identity")
    assert config["max_batch_size"] == 0
    assert [(t["name"], t["dims"]) for t in config["input"]] == [("INPUT0", [-1])]
    assert [(t["name"], t["dims"]) for t in config["output"]] == [("OUTPUT0", [-1])]
    assert "dynamic_batching" not in config
    message = grpc_client.get_model_config("string_identity").config
    assert message.max_batch_size == 0
    assert list(message.input[0].dims) == [-1]
    assert not message.HasField("dynamic_batching")
    assert http.get_model_metadata("string_identity")["inputs"][0]["shape"] == [-1]


def test_a_model_with_a_batch_limit_is_configured_as_before(http):
    config = http.get_model_config("simple")
    assert config["max_batch_size"] == 8
    assert config["input"][0]["dims"] == [16]


def bytes_input(module, count: int):
    data = np.full(count, b"x", dtype=object)
    tensor = module.InferInput("INPUT0", [count], "BYTES")
    tensor.set_data_from_numpy(data)
    return tensor


@pytest.mark.parametrize("count", [1, 5000])
def test_the_first_dimension_of_a_model_without_a_batch_dimension_is_not_a_batch(http, grpc_client, count):
    """Past the server's 4096-row batch limit, and past nothing when 1: it is the model's own dimension."""
    for module, client in ((httpclient, http), (grpcclient, grpc_client)):
        answer = client.infer("string_identity", [bytes_input(module, count)])
        assert answer.as_numpy("OUTPUT0").shape == (count,)


@pytest.mark.slow
def test_ten_million_strings_in_one_request(http):
    """Triton's string_identity case: 10,000,000 one-byte elements (a 50 MB body, under the 64 MiB limit)."""
    answer = http.infer("string_identity", [bytes_input(httpclient, 10_000_000)])
    out = answer.as_numpy("OUTPUT0")
    assert out.shape == (10_000_000,)
    assert out[-1] == b"x"


def test_a_batch_over_the_limit_of_a_batched_model_is_still_refused(http):
    with pytest.raises(InferenceServerException, match="a batch of 9 exceeds the model's max_batch_size of 8"):
        http.infer("simple", simple_inputs(httpclient, rows=9))


# -- input format ------------------------------------------------------------------------------------------
def test_an_input_format_is_in_the_configuration(http, grpc_client):
    found = http.get_model_config("image")["input"][0]
    assert (found["format"], found["dims"]) == ("FORMAT_NCHW", [3, 4, 4])
    assert (found["is_shape_tensor"], found["optional"]) == (False, False)
    message = grpc_client.get_model_config("image").config.input[0]
    assert message.format == grpcclient.model_config_pb2.ModelInput.FORMAT_NCHW
    assert (message.is_shape_tensor, message.optional) == (False, False)
    assert http.get_model_config("simple")["input"][0]["format"] == "FORMAT_NONE"


# -- error phrases Triton's clients match on -----------------------------------------------------------------
def test_an_unknown_model_is_named_as_triton_names_it_over_http(http):
    """simple_http_infer_client.py: ``"Request for unknown model" in message``."""
    with pytest.raises(InferenceServerException) as info:
        http.infer("wrong_model_name", simple_inputs(httpclient))
    assert info.value.message().startswith("Request for unknown model: 'wrong_model_name' is not found")
    with pytest.raises(InferenceServerException) as info:
        http.get_model_metadata("wrong_model_name")
    assert info.value.message().startswith("Request for unknown model")


def test_an_unknown_model_is_named_as_triton_names_it_over_http_aio(server):
    """simple_http_aio_infer_client.py: ``message.startswith("Request for unknown model")``."""

    async def call() -> str:
        client = aiohttpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
        try:
            await client.infer("wrong_model_name", simple_inputs(aiohttpclient))
        except InferenceServerException as exc:
            return str(exc.message())
        finally:
            await client.close()
        return "no error"

    assert asyncio.run(call()).startswith("Request for unknown model")


def test_an_unknown_model_is_named_as_triton_names_it_over_grpc(grpc_client):
    with pytest.raises(InferenceServerException) as info:
        grpc_client.infer("wrong_model_name", simple_inputs(grpcclient))
    assert info.value.message().startswith("Request for unknown model: 'wrong_model_name'")


def raw_simple_request(version: str = "") -> service_pb2.ModelInferRequest:
    """As grpc_explicit_int_content_client.py builds it: typed contents, no raw_input_contents."""
    request = service_pb2.ModelInferRequest(model_name="simple", model_version=version)
    for name, values in (("INPUT0", list(range(16))), ("INPUT1", [1] * 16)):
        tensor = request.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        tensor.contents.int_contents[:] = values
    request.outputs.add(name="OUTPUT0")
    request.outputs.add(name="OUTPUT1")
    return request


def test_a_bad_version_string_is_named_as_triton_names_it(stub):
    """grpc_explicit_int8_content_client.py's check."""
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(raw_simple_request("wrong_specification"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "failed to get model version from specified version string 'wrong_specification'" in str(info.value)


def test_contents_beside_raw_contents_are_named_as_triton_names_them(stub):
    """grpc_explicit_int_content_client.py's check: one raw entry for two inputs, and contents in INPUT0."""
    request = raw_simple_request()
    assert stub.ModelInfer(request).outputs[0].name == "OUTPUT0"
    request.raw_input_contents.extend([np.arange(8).tobytes()])
    request.inputs[0].contents.int_contents[:] = list(range(8, 16))
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert ("contents field must not be specified when using raw_input_contents for 'INPUT0' for model 'simple'"
            in str(info.value))
