"""Triton's load parameters, read once for both transports: their checks, and a Triton model configuration
applied over a model.toml."""

from __future__ import annotations

import base64

import pytest

from inferd.config import BatchingConfig, InputConfig, ModelConfig
from inferd.errors import ErrorCode, InferError
from inferd.load_parameters import apply_config, check_unload_parameters, parse_load_parameters


def refused(call, *args, match: str) -> None:
    with pytest.raises(InferError, match=match) as info:
        call(*args)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


def test_no_parameters_is_a_plain_load():
    assert parse_load_parameters("m", None) is None
    assert parse_load_parameters("m", {}) is None


def test_file_content_is_base64_text_or_bytes():
    parsed = parse_load_parameters("m", {"config": "{}", "file:1/a.py": base64.b64encode(b"x = 1").decode(),
                                         "file:1/b.bin": b"\0\1"})
    assert parsed is not None
    assert parsed.config == {}
    assert parsed.files == {"1/a.py": b"x = 1", "1/b.bin": b"\0\1"}


@pytest.mark.parametrize("key", ["file:../x", "file:/etc/x", "file:1/../../x", "file:1/./x", "file:1\\..\\x",
                                 "file:", "file:1/x\0"])
def test_a_file_path_must_stay_inside_the_model_folder(key):
    refused(parse_load_parameters, "m", {"config": "{}", key: b""}, match="a file path must be relative")


def test_bad_parameters_say_the_load_failed():
    refused(parse_load_parameters, "m", {"config": "{{"}, match="^failed to load 'm': load parameter 'config' is "
                                                               "not valid JSON")
    refused(parse_load_parameters, "m", {"config": "[1]"}, match="must be a JSON object")
    refused(parse_load_parameters, "m", {"file:1/a": b""}, match="need a 'config' parameter")
    refused(parse_load_parameters, "m", {"other": "x"}, match="unknown load parameter 'other'")
    refused(parse_load_parameters, "m", {"config": "[" * 100_000}, match="'config' is (not valid JSON|nested too)")


def test_unload_takes_unload_dependents_only():
    check_unload_parameters("m", {"unload_dependents": True})
    check_unload_parameters("m", None)
    refused(check_unload_parameters, "m", {"unload_dependents": "yes"}, match="must be true or false")
    refused(check_unload_parameters, "m", {"purge": True}, match="unknown unload parameter 'purge'")


def test_a_triton_configuration_replaces_what_it_names_and_keeps_the_rest():
    base = ModelConfig(max_batch_size=8, description="kept", batching=BatchingConfig(max_queue_delay_us=100))
    triton = {"name": "m", "max_batch_size": "16", "backend": "python",
              "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": ["3", 4], "format": "FORMAT_NHWC"},
                        {"name": "t", "data_type": "TYPE_STRING", "dims": [1], "reshape": {"shape": []}}],
              "dynamic_batching": {"preferred_batch_size": [4], "priority_levels": 2},
              "instance_group": [{"count": 2, "kind": "KIND_CPU"}], "version_policy": {"all": {}}}
    config = apply_config("m", base, triton)
    assert (config.max_batch_size, config.description, config.versions.policy) == (16, "kept", "all")
    assert config.inputs == [InputConfig(name="x", datatype="FP32", shape=[-1, 3, 4], format="FORMAT_NHWC"),
                             InputConfig(name="t", datatype="BYTES", shape=[-1])]
    assert (config.batching.enabled, config.batching.max_queue_delay_us, config.batching.preferred_batch_sizes) == (
        True, 100, [4])
    assert (config.queue.priority_levels, config.instances.count) == (2, 2)


def test_without_a_batch_dimension_dims_are_the_shape():
    config = apply_config("m", ModelConfig(), {"max_batch_size": 0,
                                               "input": [{"name": "s", "data_type": "TYPE_STRING", "dims": [-1]}]})
    assert (config.max_batch_size, config.inputs[0].shape) == (0, [-1])


@pytest.mark.parametrize(("triton", "match"), [
    ({"name": "other"}, "its name 'other' is not the model's name"),
    ({"max_batch_size": "many"}, "max_batch_size must be an integer"),
    ({"max_batch_size": -1}, "max_batch_size: Input should be greater than or equal to 0"),
    ({"colour": "red"}, "unknown field 'colour'"),
    ({"ensemble_scheduling": {}}, "does not support ensemble_scheduling"),
    ({"model_transaction_policy": {"decoupled": True}}, "does not serve decoupled models"),
    ({"input": [{"name": "x", "data_type": "TYPE_FP8", "dims": [1]}]}, "data_type must be one of"),
    ({"input": [{"name": "x", "data_type": ["TYPE_FP32"], "dims": [1]}]}, "data_type must be one of"),
    ({"input": [{"name": "x", "data_type": "TYPE_FP32", "dims": "1"}]}, "dims must be a list"),
    ({"input": {"name": "x"}}, "input must be a list"),
    ({"model_transaction_policy": ["decoupled"]}, "model_transaction_policy must be an object"),
    ({"input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1], "optional": True}]}, "does not support optional"),
    ({"input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1], "format": "FORMAT_RGB"}]}, "format"),
    ({"instance_group": [{"kind": "KIND_GPU"}]}, "runs models on the CPU"),
    ({"max_batch_size": 0, "dynamic_batching": {}}, "cannot have \\[batching\\] enabled = true"),
])
def test_what_inferd_cannot_honour_fails_the_load(triton, match):
    refused(apply_config, "m", ModelConfig(), triton, match=f"^failed to load 'm': load parameter 'config': .*{match}")
