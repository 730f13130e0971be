"""The standard gRPC health service and server reflection of a real ``inferd serve``, called with the stock stubs
(grpcio-health-checking's ``HealthStub``, grpcio-reflection's descriptor database) as Kubernetes gRPC probes,
``grpc_health_probe`` and ``grpcurl`` call them."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from fakes import ADDER, write_model
from inferd.security.keys import hash_key
from server_process import ServerProcess

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
READER_KEY = "k-read-0123456789abcdefghijklmnopqrstuvw"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("health")
    write_model(root / "models", "adder", ADDER)
    write_model(root / "models", "spare", ADDER)
    keys = root / "keys.toml"
    keys.write_text(f'[[keys]]\nname = "reader"\nsha256 = "{hash_key(READER_KEY)}"\nscopes = {json.dumps(["read"])}\n'
                    f'[[keys]]\nname = "boss"\nsha256 = "{hash_key(READER_KEY[::-1])}"\nscopes = ["admin"]\n')
    yield from ServerProcess(root / "models", root / "serve.log",
                             extra_args=["--api-keys-file", str(keys)]).serving()


@pytest.fixture
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_url) as opened:
        yield opened


def check(channel: grpc.Channel, service: str) -> int:
    answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    return int(answer.status)


def test_the_server_and_its_models_are_serving_without_a_key(channel):
    assert check(channel, "") == SERVING
    assert check(channel, "inference.GRPCInferenceService") == SERVING
    assert check(channel, "adder") == SERVING


def test_an_unknown_name_is_not_found_naming_it(channel):
    with pytest.raises(grpc.RpcError) as caught:
        check(channel, "no-such-model")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-model" in caught.value.details()


def test_watch_sees_a_model_unloaded_and_loaded_again(server, channel):
    stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service="spare"), timeout=30)
    assert next(stream).status == SERVING
    admin = [("authorization", f"Bearer {READER_KEY[::-1]}")]
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        client.unload_model("spare", headers=dict(admin))
        assert next(stream).status == NOT_SERVING
        assert check(channel, "spare") == NOT_SERVING
        client.load_model("spare", headers=dict(admin))
        assert next(stream).status == SERVING
    stream.cancel()
    assert check(channel, "") == SERVING  # the server did not mind the cancelled watch


def test_reflection_lists_the_services_and_describes_the_messages(channel):
    reflection = ProtoReflectionDescriptorDatabase(channel)
    with pytest.raises(grpc.RpcError) as caught:  # reflection is metadata: the read scope
        reflection.get_services()
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    authorised = grpc.intercept_channel(channel, _KeyInterceptor(READER_KEY))
    reflection = ProtoReflectionDescriptorDatabase(authorised)
    services = set(reflection.get_services())
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"} <= services
    pool = DescriptorPool(reflection)
    infer = pool.FindServiceByName("inference.GRPCInferenceService").FindMethodByName("ModelInfer")
    assert infer.input_type.full_name == "inference.ModelInferRequest"
    assert "raw_input_contents" in infer.input_type.fields_by_name


class _KeyInterceptor(grpc.StreamStreamClientInterceptor):  # type: ignore[misc]
    """Adds the API key to the reflection stream's metadata (the descriptor database takes no metadata)."""

    def __init__(self, key: str) -> None:
        self.key = key

    def intercept_stream_stream(self, continuation, details, requests):
        metadata = [*(details.metadata or ()), ("authorization", f"Bearer {self.key}")]
        return continuation(details._replace(metadata=metadata), requests)
