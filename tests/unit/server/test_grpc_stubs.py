"""The committed gRPC code: no drift from the .proto files, wire-compatible with tritonclient's compiled
protocol, and able to share a process with it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.protobuf import descriptor_pool, json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor
from tritonclient.grpc import model_config_pb2 as triton_config
from tritonclient.grpc import service_pb2 as triton_service

from inferd.inference import ConfigTensor, ModelConfiguration
from inferd.server.grpc.generated import grpc_service_pb2, model_config_pb2
from inferd.server.triton import config_to_json
from inferd.signature import Signature, TensorSpec
from inferd.stats import ModelStats

ROOT = Path(__file__).resolve().parents[3]
GENERATED = ROOT / "src" / "inferd" / "server" / "grpc" / "generated"


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_grpc", ROOT / "scripts" / "generate_grpc.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_files_match_the_protos(tmp_path):
    """Fails when a .proto changed without `python scripts/generate_grpc.py`, or the output was edited."""
    written = load_generator().generate(tmp_path)
    fresh = {p.name: p.read_text() for p in written}
    committed = {p.name: p.read_text() for p in GENERATED.iterdir() if p.is_file()}
    assert sorted(committed) == sorted(fresh)
    drifted = [name for name in fresh if fresh[name] != committed[name]]
    assert not drifted, f"regenerate with: .venv/bin/python scripts/generate_grpc.py ({', '.join(drifted)} drifted)"


def test_generated_imports_are_package_relative():
    for path in GENERATED.glob("*.py*"):
        text = path.read_text()
        assert "\nimport model_config_pb2" not in text, path.name
        assert "\nimport grpc_service_pb2" not in text, path.name


def assert_same_enum(ours: EnumDescriptor, theirs: EnumDescriptor) -> None:
    assert [(v.name, v.number) for v in ours.values] == [(v.name, v.number) for v in theirs.values][:len(ours.values)]


def assert_wire_compatible(ours: Descriptor, theirs: Descriptor) -> None:
    """Every field we declare is theirs too: same name, number, type and cardinality, recursively."""
    assert ours.full_name == theirs.full_name
    for field in ours.fields:
        other = theirs.fields_by_name.get(field.name)
        where = f"{ours.full_name}.{field.name}"
        assert other is not None, f"{where} is not in tritonclient's protocol"
        assert (field.number, field.type, field.is_repeated) == (other.number, other.type, other.is_repeated), where
        if field.message_type is not None:
            assert_wire_compatible(field.message_type, other.message_type)
        if field.enum_type is not None:
            assert_same_enum(field.enum_type, other.enum_type)
    for oneof in ours.oneofs:  # we may declare some of a oneof's members, each a member of theirs too
        assert {f.name for f in oneof.fields} <= {f.name for f in theirs.oneofs_by_name[oneof.name].fields}


@pytest.mark.parametrize("name", sorted(grpc_service_pb2.DESCRIPTOR.message_types_by_name))
def test_every_message_is_wire_compatible_with_tritonclient(name):
    assert_wire_compatible(grpc_service_pb2.DESCRIPTOR.message_types_by_name[name],
                           triton_service.DESCRIPTOR.message_types_by_name[name])


def test_model_config_is_wire_compatible_with_tritonclient():
    assert_wire_compatible(model_config_pb2.ModelConfig.DESCRIPTOR, triton_config.ModelConfig.DESCRIPTOR)
    assert_same_enum(model_config_pb2.DataType.DESCRIPTOR, triton_config.DataType.DESCRIPTOR)
    assert len(model_config_pb2.DataType.DESCRIPTOR.values) == len(triton_config.DataType.DESCRIPTOR.values)


def test_every_call_matches_tritonclient():
    ours = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = triton_service.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert ours.full_name == theirs.full_name == "inference.GRPCInferenceService"

    def shape(method: Any) -> tuple[str, str, bool, bool]:
        return (method.input_type.full_name, method.output_type.full_name, method.client_streaming,
                method.server_streaming)

    assert len(ours.methods) == 18
    for method in ours.methods:
        assert shape(method) == shape(theirs.methods_by_name[method.name]), method.name


def test_our_messages_live_in_their_own_pool():
    """tritonclient owns the default pool's ``inference.*``; ours must not collide with it."""
    default = descriptor_pool.Default().FindMessageTypeByName("inference.ModelInferRequest")
    assert default is triton_service.ModelInferRequest.DESCRIPTOR
    assert grpc_service_pb2.ModelInferRequest.DESCRIPTOR is not default


def test_statistics_and_config_json_fill_every_field():
    """The Triton JSON shapes the servicer parses (shared with REST) have no key the messages would drop."""
    stats = ModelStats("m", "1")
    stats.record_success(4, 10, 1, 2, 3, 4, 4)
    json_format.ParseDict({"model_stats": [stats.to_dict()]}, grpc_service_pb2.ModelStatisticsResponse())
    config = ModelConfiguration("m", "onnx", 8, [ConfigTensor("x", "BYTES", (3,)), ConfigTensor("t", "BYTES", (1,), ())],
                                [ConfigTensor("y", "BF16", ())])
    message = json_format.ParseDict(config_to_json(config), model_config_pb2.ModelConfig())
    theirs = triton_config.ModelConfig.FromString(message.SerializeToString())
    assert theirs.input[0].data_type == triton_config.TYPE_STRING
    assert not theirs.input[0].HasField("reshape")
    assert theirs.input[1].HasField("reshape")  # Triton's form of a one-value-per-row input: dims [1], reshape []
    assert (list(theirs.input[1].dims), list(theirs.input[1].reshape.shape)) == ([1], [])


def test_config_json_states_a_reshape_as_triton_does():
    text = TensorSpec("text", "BYTES", (-1,))
    signature = Signature((text,), (text,))
    config = ModelConfiguration("m", "sklearn", 8, [ConfigTensor.of(signature.inputs[0], batched=True)],
                                [ConfigTensor.of(signature.outputs[0], batched=True)])
    found = config_to_json(config)
    assert found["input"] == [{"name": "text", "data_type": "TYPE_STRING", "dims": [1], "reshape": {"shape": []},
                               "format": "FORMAT_NONE", "is_shape_tensor": False, "allow_ragged_batch": False,
                               "optional": False}]
    assert found["output"] == [{"name": "text", "data_type": "TYPE_STRING", "dims": [],  # not marked: an output
                                "is_shape_tensor": False}]


def test_config_states_an_input_format_in_tritons_message():
    image = TensorSpec("image", "FP32", (-1, 3, 8, 8))
    config = ModelConfiguration("m", "onnx", 8, [ConfigTensor.of(image, batched=True, format="FORMAT_NCHW")],
                                [ConfigTensor.of(image, batched=True)])
    theirs = json_format.ParseDict(config_to_json(config), triton_config.ModelConfig())
    assert theirs.input[0].format == triton_config.ModelInput.FORMAT_NCHW
    assert (theirs.input[0].is_shape_tensor, theirs.input[0].optional) == (False, False)
    assert list(theirs.input[0].dims) == [3, 8, 8]
