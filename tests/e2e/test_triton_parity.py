"""What Triton's own client examples rely on, with the stock ``tritonclient`` over HTTP and gRPC against a real
server holding models shaped like Triton's qa models (tests/triton_models.py): the repository extension's load
parameters, duplicate requested outputs, ``max_batch_size = 0``, input formats in the configuration, and the error
phrases Triton's clients match on."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.http.aio as aiohttpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from server_process import ServerProcess
from triton_models import SIMPLE, write_triton_models


@pytest.fixture(scope="module")
def triton_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("triton") / "models"
    write_triton_models(root)
    return root


@pytest.fixture(scope="module")
def server_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's TMPDIR: where the folders of models loaded from files go."""
    return tmp_path_factory.mktemp("server-tmp")


@pytest.fixture(scope="module")
def server(triton_repo: Path, server_tmp: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(triton_repo, tmp_path_factory.mktemp("logs") / "serve.log", env={"TMPDIR": str(server_tmp)})
    yield from process.serving(timeout=120)


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
def test_ten_million_strings_in_one_request(server):
    """Triton's string_identity case: 10,000,000 one-byte elements (a 50 MB body, under the 64 MiB limit). The
    body is the one tritonclient sends, built with numpy (tritonclient's own serializer, a Python loop, takes
    longer than the server); the answer's binary part must be the very bytes sent."""
    count = 10_000_000
    raw = np.tile(np.frombuffer(b"\x01\x00\x00\x00x", np.uint8), count).tobytes()  # length 1, then b"x"
    header = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [count],
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]}).encode()
    answer = httpx.post(f"{server.url}/v2/models/string_identity/infer", content=header + raw, timeout=300,
                        headers={"Inference-Header-Content-Length": str(len(header))})
    assert answer.status_code == 200, answer.text[:300]
    length = int(answer.headers["Inference-Header-Content-Length"])
    output = json.loads(answer.content[:length])["outputs"][0]
    assert (output["shape"], output["parameters"]["binary_data_size"]) == ([count], len(raw))
    assert answer.content[length:] == raw


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


# -- repository extension: load parameters -------------------------------------------------------------------
MALFORMED = '"parameters": {"config": {{"max_batch_size": "16"}}}'  # what simple_*_model_control.py sends


def staged(server_tmp: Path) -> list[Path]:
    return sorted(server_tmp.glob("inferd-load-*"))


@pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
def test_a_load_overrides_the_configuration_as_the_model_control_examples_expect(server, module):
    """simple_http_model_control.py and simple_grpc_model_control.py, step by step."""
    url = f"127.0.0.1:{server.http_port}" if module is httpclient else server.grpc_url
    client = module.InferenceServerClient(url)
    try:
        def max_batch_size() -> int:
            config = client.get_model_config("simple")
            return int(config["max_batch_size"] if module is httpclient else config.config.max_batch_size)

        client.load_model("simple")
        assert client.is_model_ready("simple")
        with pytest.raises(InferenceServerException, match="failed to load 'simple': load parameter 'config' is "
                                                           "not valid JSON"):
            client.load_model("simple", config=MALFORMED)
        assert client.is_model_ready("simple")  # a refused load leaves the loaded model alone
        assert max_batch_size() == 8
        client.load_model("simple", config='{"max_batch_size":"16"}')
        assert max_batch_size() == 16
        assert client.infer("simple", simple_inputs(module, rows=16)).as_numpy("OUTPUT0").shape == (16, 16)
        client.unload_model("simple", unload_dependents=True)
        assert not client.is_model_ready("simple")
        with pytest.raises(InferenceServerException, match="failed to load"):
            client.load_model("wrong_model_name")
        client.load_model("simple")  # the model's own configuration again
        assert max_batch_size() == 8
    finally:
        client.close()


def test_a_load_body_that_is_not_json_config_fails_over_raw_http(server, http):
    answer = httpx.post(f"{server.url}/v2/repository/models/simple/load",
                        json={"parameters": {"config": "not json at all {{"}})
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("failed to load 'simple': load parameter 'config' is not valid JSON")
    answer = httpx.post(f"{server.url}/v2/repository/models/simple/load",
                        json={"parameters": {"config": json.dumps({"max_batch_size": 4, "ensemble_scheduling": {}})}})
    assert (answer.status_code, answer.json()["error"]) == (
        400, "failed to load 'simple': load parameter 'config': inferd does not support ensemble_scheduling")
    answer = httpx.post(f"{server.url}/v2/repository/models/simple/unload", json={"parameters": {"purge": True}})
    assert answer.status_code == 400
    assert http.is_model_ready("simple")


def test_a_config_names_inputs_in_tritons_form(http):
    """A configuration as /config gives it (dims without the batch dimension, a format) is one a load takes."""
    config = http.get_model_config("image")
    config["max_batch_size"] = 2
    config["input"][0]["format"] = "FORMAT_NHWC"
    try:
        http.load_model("image", config=json.dumps(config))
        found = http.get_model_config("image")
        assert (found["max_batch_size"], found["input"][0]["format"], found["input"][0]["dims"]) == (
            2, "FORMAT_NHWC", [3, 4, 4])
        config["input"][0]["dims"] = [5, 4, 4]  # not what the model takes: the load fails with the reason
        with pytest.raises(InferenceServerException, match="failed to load model 'image'.*IMAGE"):
            http.load_model("image", config=json.dumps(config))
    finally:
        http.load_model("image")


SIMPLE_FILES = {"file:1/model.py": textwrap.dedent(SIMPLE).encode()}


@pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
def test_a_model_loads_from_files_in_a_folder_removed_at_unload(server, server_tmp, module):
    url = f"127.0.0.1:{server.http_port}" if module is httpclient else server.grpc_url
    client = module.InferenceServerClient(url)
    name = f"uploaded_{module.__name__.rsplit('.', 1)[-1]}"
    try:
        client.load_model(name, config='{"max_batch_size": 4}', files=SIMPLE_FILES)
        assert len(staged(server_tmp)) == 1
        assert (staged(server_tmp)[0] / name / "1" / "model.py").is_file()
        assert client.infer(name, simple_inputs(module, rows=4)).as_numpy("OUTPUT1")[0, 0] == -1
        with pytest.raises(InferenceServerException, match="a batch of 5 exceeds the model's max_batch_size of 4"):
            client.infer(name, simple_inputs(module, rows=5))
        client.load_model(name, config='{"max_batch_size": 2}', files=SIMPLE_FILES)  # a reload replaces the folder
        assert len(staged(server_tmp)) == 1
        client.unload_model(name)
        assert staged(server_tmp) == []
    finally:
        client.close()


@pytest.mark.parametrize("path", ["file:../escaped.py", "file:/tmp/escaped.py", "file:1/../../escaped.py",
                                  "file:1//model.py", "file:1\\..\\escaped.py", "file:"])
def test_a_file_path_that_leaves_the_model_folder_is_refused(server, server_tmp, http, grpc_client, path):
    for client in (http, grpc_client):
        with pytest.raises(InferenceServerException, match="a file path must be relative") as info:
            client.load_model("escape", config="{}", files={path: b"print('hello')"})
        assert info.value.status() in ("400", "StatusCode.INVALID_ARGUMENT")
    assert staged(server_tmp) == []
    assert not list(server_tmp.parent.rglob("escaped.py"))


def test_files_without_a_config_and_content_that_is_not_base64_are_refused(server, http):
    with pytest.raises(InferenceServerException, match="need a 'config' parameter"):
        http.load_model("uploaded", files=SIMPLE_FILES)
    answer = httpx.post(f"{server.url}/v2/repository/models/uploaded/load",
                        json={"parameters": {"config": "{}", "file:1/model.py": "not base64!"}})
    assert (answer.status_code, answer.json()["error"]) == (
        400, "failed to load 'uploaded': load parameter 'file:1/model.py' is not valid base64")
    with pytest.raises(InferenceServerException, match="the files could not be written to a model folder"):
        http.load_model("uploaded", config="{}", files={"file:1/a": b"file", "file:1/a/b": b"beneath a file"})


def test_folders_of_models_loaded_from_files_are_removed_at_shutdown(triton_repo, tmp_path):
    server_tmp = tmp_path / "tmp"
    server_tmp.mkdir()
    process = ServerProcess(triton_repo, tmp_path / "serve.log", env={"TMPDIR": str(server_tmp)})
    for _ in process.serving(timeout=120):
        with httpclient.InferenceServerClient(f"127.0.0.1:{process.http_port}") as client:
            client.load_model("uploaded", config="{}", files=SIMPLE_FILES)
            with pytest.raises(InferenceServerException, match="failed to load model 'broken'.*RuntimeError: no"):
                client.load_model("broken", config="{}", files={"file:1/model.py": b"raise RuntimeError('no')\n"})
        assert len(staged(server_tmp)) == 2  # a model that failed to load keeps its folder (and its reason)
    assert staged(server_tmp) == []
