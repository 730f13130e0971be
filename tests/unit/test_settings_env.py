"""The settings read without pydantic-settings (inferd.settings_env) are the settings pydantic-settings reads: for each
environment and command line below, ``load_settings`` and a pydantic-settings class with the same fields and
validators (the judge) give equal settings, or the same error lines."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from typing import Any

import pytest
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from inferd.settings import (
    ENV_PREFIX,
    InvalidSettingsError,
    ServerSettings,
    describe_errors,
    load_settings,
    platform_overrides,
    variable,
)
from inferd.settings_env import environment_values


class Judge(BaseSettings, ServerSettings):
    """ServerSettings' fields and validators, with the variables read by pydantic-settings."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", use_attribute_docstrings=True)


def judged(given: Mapping[str, Any], flags: list[str]) -> dict[str, Any] | str:
    """What pydantic-settings makes of os.environ and ``given`` (with the platform variables between them, as
    load_settings puts them): the settings as a dict, or load_settings' error text for them."""
    platform = platform_overrides()
    values = {**{setting: value for setting, (_, value) in platform.items()}, **given}
    try:
        return Judge(**values).model_dump()
    except ValidationError as exc:
        return describe_errors(exc, flags, given, platform)
    except SettingsError as exc:
        field = re.search(r'field "(\w+)"', str(exc))
        return f"{variable(field.group(1)) if field else exc}: not valid JSON: {exc.__cause__}"


def ours(given: Mapping[str, Any], flags: list[str]) -> dict[str, Any] | str:
    try:
        return load_settings(given, flags=flags).model_dump()
    except InvalidSettingsError as exc:
        return str(exc)


KEY = {"name": "ci", "sha256": hashlib.sha256(b"k").hexdigest(), "scopes": ["infer", "read"]}

CASES: list[tuple[dict[str, str], dict[str, Any]]] = [
    ({}, {}),
    ({"INFERD_HTTP_PORT": "9000", "INFERD_HOST": "0.0.0.0", "INFERD_LOG_LEVEL": "DEBUG"}, {}),
    ({"inferd_grpc_port": "0", "Inferd_Access_Log": "true"}, {}),  # any case, as pydantic-settings reads them
    ({"INFERD_HTTP_PORT": "9000"}, {"http_port": 7000}),  # the command line wins
    ({"INFERD_HTTP_PORT": "9000", "AIP_HTTP_PORT": "7070"}, {}),  # the platform variable wins over INFERD_*
    ({"SAGEMAKER_BIND_TO_PORT": "8088", "AIP_PREDICT_ROUTE": "/p", "AIP_HEALTH_ROUTE": "/h"}, {}),
    ({"INFERD_MODEL_CONTROL": "on-demand", "INFERD_MEMORY_BUDGET": "2GiB", "INFERD_IDLE_UNLOAD_S": "1.5",
      "INFERD_LOAD_TIMEOUT_S": "3", "INFERD_POLL_S": "0.5", "INFERD_CACHE_BYTES": "1MiB"}, {}),
    ({"INFERD_DYNAMIC_BATCHING": "false", "INFERD_STRICT_READINESS": "0", "INFERD_STATE_DIR": "/tmp/st"}, {}),
    ({"INFERD_BATCH_ROOTS": '["/data", "s3://b/"]', "INFERD_ASYNC_MODEL_CALLBACK_URLS": '{"m": "http://h/x"}',
      "INFERD_ASYNC_CALLBACK_ALLOWED": "[]"}, {}),
    ({"INFERD_API_KEYS": json.dumps([KEY])}, {}),
    ({"INFERD_PUBLIC_URL": "https://inferd.example.com/", "INFERD_JOB_STORE": ""}, {}),
    ({"INFERD_DEFAULT_MODEL": "", "INFERD_CAPTURE_DIR": ""}, {}),  # empty values are values
    ({"INFERD_NOT_A_SETTING": "1", "OTHER": "x"}, {}),  # unknown variables are not settings
    # bad values: the same lines
    ({}, {"http_port": 70000}),
    ({"INFERD_GRPC_PORT": "lots"}, {}),
    ({"AIP_HTTP_PORT": "eighty"}, {}),
    ({"INFERD_MAX_QUEUE_SIZE": "0", "INFERD_LOG_FORMAT": "xml"}, {"http_port": -1}),
    ({"INFERD_LOG_LEVEL": "loud"}, {}),
    ({"INFERD_API_KEYS": "[{"}, {}),
    ({"INFERD_BATCH_ROOTS": "/data"}, {}),  # a list that is not JSON
    ({"INFERD_API_KEYS": '[{"name": "ci", "sha256": "secret-looking"}]'}, {}),
    ({"INFERD_MEMORY_BUDGET": "2GiB"}, {}),  # needs on-demand
    ({"INFERD_MODEL_CONTROL": "sometimes"}, {"idle_unload_s": 3.0}),
    ({"INFERD_PUBLIC_URL": "ftp://x", "INFERD_JOB_STORE": "mysql://x"}, {}),
    ({"INFERD_MEMORY_BUDGET": "lots", "INFERD_MODEL_CONTROL": "on-demand", "INFERD_CACHE_BYTES": "-1"}, {}),
    ({"INFERD_ASYNC_MODEL_CALLBACK_URLS": '["not", "a", "mapping"]'}, {}),
]


@pytest.mark.parametrize(("env", "given"), CASES, ids=[json.dumps(c) for c in CASES])
def test_the_settings_are_pydantic_settings(env, given, monkeypatch):
    for name in [name for name in os.environ if name.upper().startswith(("INFERD_", "AIP_", "SAGEMAKER_"))]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    flags = ["http_port", "grpc_port", "memory_budget", "idle_unload_s", "model_control", "log_level", "log_format"]
    expected, found = judged(given, flags), ours(given, flags)
    assert found == expected
    if any(value in ("lots", "loud", "eighty", "xml", "[{") for value in env.values()):
        assert isinstance(found, str)  # the bad cases are bad


def test_json_settings_are_the_list_and_mapping_ones():
    found = environment_values(ServerSettings, ENV_PREFIX, {"INFERD_BATCH_ROOTS": '["a"]', "INFERD_HOST": '"h"',
                                                            "INFERD_DEFAULT_MODEL": "[1]"})
    assert found == {"batch_roots": ["a"], "host": '"h"', "default_model": "[1]"}  # text stays text
