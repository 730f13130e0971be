from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from inferd.config import ConfigError, load_model_config, locate_key, validate_options


def write(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.toml").write_text(text)
    return folder


def test_no_file_means_defaults(tmp_path):
    config = load_model_config(tmp_path)
    assert config.runtime is None
    assert config.versions.policy == "latest"
    assert config.signature_override() is None


def test_full_config(tmp_path):
    config = load_model_config(write(tmp_path, """
runtime = "onnx"
description = "digits"

[versions]
policy = "specific"
specific = [1, 3]

[[inputs]]
name = "input"
datatype = "FP32"
shape = [-1, 64]

[options]
intra_op_threads = 2
"""))
    assert config.runtime == "onnx"
    assert config.versions.select([1, 2, 3]) == [1, 3]
    override = config.signature_override()
    assert override is not None
    assert override.inputs[0].shape == (-1, 64)
    assert config.options == {"intra_op_threads": 2}


def test_unknown_key_names_file_line_and_key(tmp_path):
    folder = write(tmp_path, 'runtime = "onnx"\n\n[versions]\npolicy = "latest"\nnewest = 2\n')
    with pytest.raises(ConfigError) as info:
        load_model_config(folder)
    assert str(info.value) == f"{folder / 'model.toml'}:5: key 'versions.newest': unknown key"


def test_wrong_type_names_file_line_and_key(tmp_path):
    folder = write(tmp_path, '[[inputs]]\nname = "a"\ndatatype = "FP32"\nshape = [1]\n\n'
                             '[[inputs]]\nname = "b"\ndatatype = "FP32"\nshape = "wide"\n')
    with pytest.raises(ConfigError, match=r"model.toml:9: key 'inputs.1.shape': Input should be a valid list"):
        load_model_config(folder)


def test_strings_are_not_numbers(tmp_path):
    folder = write(tmp_path, '[versions]\nlatest = "2"\n')
    with pytest.raises(ConfigError, match=r"model.toml:2: key 'versions.latest': Input should be a valid integer"):
        load_model_config(folder)


def test_bad_datatype_and_bad_policy(tmp_path):
    folder = write(tmp_path, '[versions]\npolicy = "newest"\n\n[[outputs]]\nname = "y"\ndatatype = "FLOAT"\nshape = []\n')
    with pytest.raises(ConfigError) as info:
        load_model_config(folder)
    message = str(info.value)
    assert "model.toml:2: key 'versions.policy'" in message
    assert "model.toml:6: key 'outputs.0.datatype'" in message


def test_specific_policy_needs_versions(tmp_path):
    folder = write(tmp_path, '[versions]\npolicy = "specific"\n')
    with pytest.raises(ConfigError) as info:
        load_model_config(folder)
    # our sentence, without pydantic's "Value error, " in front of it
    assert str(info.value) == (f"{folder / 'model.toml'}:1: key 'versions': "
                               "policy 'specific' needs a non-empty 'specific' list of versions")


def test_a_wrong_value_is_quoted_back(tmp_path):
    folder = write(tmp_path, '[batching]\nenabled = "yes"\nmax_queue_delay_us = -1\n\n[instances]\n'
                             f'kind = "{"x" * 100}"\n')
    with pytest.raises(ConfigError) as info:
        load_model_config(folder)
    where = folder / "model.toml"
    assert str(info.value).splitlines() == [
        f"{where}:2: key 'batching.enabled': Input should be a valid boolean, got 'yes'",
        f"{where}:3: key 'batching.max_queue_delay_us': Input should be greater than or equal to 0, got -1",
        f"{where}:6: key 'instances.kind': Input should be 'thread' or 'process', got '{'x' * 56}...",
    ]


def test_invalid_toml_is_reported_with_position(tmp_path):
    with pytest.raises(ConfigError, match=r"model.toml: not valid TOML: .*line 1"):
        load_model_config(write(tmp_path, "runtime = \n"))


def test_version_policies():
    from inferd.config import VersionPolicy

    assert VersionPolicy().select([3, 1, 2]) == [3]
    assert VersionPolicy(policy="latest", latest=2).select([3, 1, 2]) == [2, 3]
    assert VersionPolicy(policy="all").select([2, 1]) == [1, 2]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    threads: int = 1


def test_runtime_options_are_located_under_options(tmp_path):
    folder = write(tmp_path, '[options]\nthreads = 2\nspeed = "max"\n')
    assert validate_options(folder, {"threads": 2}, _Options).threads == 2
    with pytest.raises(ConfigError, match=r"model.toml:3: key 'options.speed': unknown key"):
        validate_options(folder, {"threads": 2, "speed": "max"}, _Options)


def test_locate_key_handles_dotted_and_quoted_keys():
    text = 'a = 1\n"versions".policy = "x"\n[options]\n  b = 2 # note\n'
    assert locate_key(text, ("versions", "policy")) == 2
    assert locate_key(text, ("options", "b")) == 4
    assert locate_key(text, ("options", "c")) == 3
    assert locate_key(text, ("nowhere",)) is None


def test_instance_limits(tmp_path):
    config = load_model_config(write(tmp_path / "a", '[instances]\nkind = "process"\nexecution_timeout_s = 30\n'
                                                     'max_requests = 1000\nmax_rss_mb = 512\n'))
    assert (config.instances.execution_timeout_s, config.instances.max_requests, config.instances.max_rss_mb) == (
        30, 1000, 512)
    assert load_model_config(tmp_path / "missing").instances.execution_timeout_s is None  # the server's default


@pytest.mark.parametrize("text", ["max_requests = 10\n", "max_rss_mb = 100\n", 'kind = "thread"\nmax_requests = 1\n'])
def test_recycling_needs_process_instances(tmp_path, text):
    with pytest.raises(ConfigError, match='recycle worker processes: they need kind = "process"'):
        load_model_config(write(tmp_path, "[instances]\n" + text))


def test_a_negative_execution_timeout_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"model.toml:2: key 'instances.execution_timeout_s'"):
        load_model_config(write(tmp_path, "[instances]\nexecution_timeout_s = -1\n"))


def test_max_batch_size_zero_cannot_batch(tmp_path):
    (tmp_path / "model.toml").write_text("max_batch_size = 0\n\n[batching]\nenabled = true\n")
    with pytest.raises(ConfigError, match="max_batch_size = 0 means the model has no batch dimension"):
        load_model_config(tmp_path)
    (tmp_path / "model.toml").write_text("max_batch_size = 0\n")
    assert load_model_config(tmp_path).max_batch_size == 0
    assert load_model_config(tmp_path / "none").max_batch_size is None


def test_an_input_format_is_triton_s_name(tmp_path):
    base = '[[inputs]]\nname = "x"\ndatatype = "FP32"\nshape = [-1, 3, 8, 8]\n'
    (tmp_path / "model.toml").write_text(base + 'format = "FORMAT_NCHW"\n')
    assert load_model_config(tmp_path).inputs[0].format == "FORMAT_NCHW"
    (tmp_path / "model.toml").write_text(base + 'format = "NCHW"\n')
    with pytest.raises(ConfigError, match="inputs.0.format"):
        load_model_config(tmp_path)
