"""The Ray Serve builder's argument handling (no Ray cluster: an application is only bound, never run)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from inferd.integrations import ray_serve
from inferd.integrations.ray_serve import MISSING_RAY, builder_arguments, server_settings
from inferd.settings import InvalidSettingsError


def test_command_line_strings_become_deployment_options_and_settings():
    options = builder_arguments({"repository": "/models", "num_replicas": "2", "num_cpus": "0.5",
                                 "max_ongoing_requests": "64", "max_batch_size": "8", "job_store": ""})
    assert options == {"repository": "/models", "num_replicas": 2, "max_ongoing_requests": 64,
                       "ray_actor_options": {"num_cpus": 0.5},
                       "settings": {"max_batch_size": "8", "job_store": ""}}


def test_ray_actor_options_as_json_or_a_mapping_and_num_cpus_on_top():
    given = builder_arguments({"repository": "m", "ray_actor_options": '{"num_cpus": 1, "memory": 1000}',
                               "num_cpus": 2})
    assert given["ray_actor_options"] == {"num_cpus": 2.0, "memory": 1000}
    assert builder_arguments({"repository": "m", "ray_actor_options": {"num_gpus": 1}})["ray_actor_options"] == {
        "num_gpus": 1}
    assert "ray_actor_options" not in builder_arguments({"repository": "m"})


@pytest.mark.parametrize(("args", "message"), [
    ({}, "app_builder needs repository=PATH"),
    ({"repository": ""}, "app_builder needs repository=PATH"),
    ({"repository": "m", "num_replicas": "two"}, "num_replicas must be an integer, got 'two'"),
    ({"repository": "m", "num_replicas": "0"}, "num_replicas must be at least 1, got '0'"),
    ({"repository": "m", "num_replicas": "1.5"}, "num_replicas must be an integer, got '1.5'"),
    ({"repository": "m", "num_cpus": "-1"}, "num_cpus must be at least 0, got '-1'"),
    ({"repository": "m", "ray_actor_options": "{not json"}, "ray_actor_options must be a JSON object"),
    ({"repository": "m", "ray_actor_options": "[1]"}, "ray_actor_options must be a JSON object, got [1]"),
])
def test_wrong_arguments_are_named(args, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        builder_arguments(args)


def test_settings_are_read_like_inferd_serve_with_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INFERD_MAX_QUEUE_SIZE", "7")
    settings = server_settings("models", {"max_batch_size": "8", "state_dir": "state"})
    assert settings.repository == tmp_path / "models"
    assert settings.state_dir == tmp_path / "state"
    assert (settings.max_batch_size, settings.max_queue_size) == (8, 7)


def test_a_wrong_setting_value_is_named():
    with pytest.raises(InvalidSettingsError, match="INFERD_MAX_BATCH_SIZE"):
        server_settings("m", {"max_batch_size": "zero"})


def test_settings_that_do_not_apply_on_serve_are_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"(?s)settings that do not work on Ray Serve:\nhttp_port: Serve's HTTP proxy owns the socket.*"
                                         r"\ngrpc_port: a replica serves REST only"):
        server_settings("m", {"http_port": "9000", "grpc_port": "9001", "max_batch_size": "4"})


def test_api_keys_from_the_environment_are_refused_not_ignored(monkeypatch, tmp_path):
    keys = tmp_path / "keys.json"
    keys.write_text("[]")
    monkeypatch.setenv("INFERD_API_KEYS_FILE", str(keys))
    with pytest.raises(ValueError, match="api_keys_file: API keys are not checked by replicas"):
        server_settings("m")


def test_without_ray_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"pip install 'inferd\[ray\]'") as info:
        ray_serve.deployment()
    assert str(info.value) == MISSING_RAY


def test_app_builder_binds_a_serve_application(tmp_path: Path):
    serve = pytest.importorskip("ray.serve", reason="Ray Serve (the ray extra) is not installed")
    app = ray_serve.app_builder({"repository": str(tmp_path), "num_replicas": "2", "num_cpus": "0.25"})
    assert isinstance(app, serve.Application)


def test_each_replica_captures_into_a_folder_of_its_own(tmp_path):
    settings = server_settings(tmp_path / "models", {"state_dir": str(tmp_path / "state")})
    assert ray_serve._own_capture_folder(settings, "abc").capture_dir == tmp_path / "state" / "capture" / "replica-abc"
    given = settings.model_copy(update={"capture_dir": tmp_path / "cap"})
    assert ray_serve._own_capture_folder(given, "abc").capture_dir == tmp_path / "cap" / "replica-abc"


def test_an_unknown_argument_is_named():
    with pytest.raises(ValueError, match="max_batchsize: no such setting"):
        ray_serve.app_builder({"repository": "m", "max_batchsize": "4"})


def test_batch_roots_need_a_shared_job_store(tmp_path):
    with pytest.raises(ValueError, match="batch_roots: batch jobs over HTTP on Ray Serve need a job store"):
        server_settings("m", {"batch_roots": [str(tmp_path)]})
    given = builder_arguments({"repository": "m", "batch_roots": f'["{tmp_path}"]', "job_store": "postgresql://h/db"})
    assert given["settings"]["batch_roots"] == [str(tmp_path)]  # JSON from the command line, as INFERD_* variables
    assert server_settings("m", given["settings"]).batch_roots == [str(tmp_path)]
