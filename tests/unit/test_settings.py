"""The platform variables (Vertex AI, SageMaker) and what they set."""

from __future__ import annotations

import pytest

from inferd.settings import InvalidSettingsError, load_settings, platform_overrides


def test_vertex_variables_set_the_port_and_routes():
    assert platform_overrides({"AIP_HTTP_PORT": "9000", "AIP_PREDICT_ROUTE": "/p", "AIP_HEALTH_ROUTE": "/h"}) == {
        "http_port": ("AIP_HTTP_PORT", "9000"), "predict_route": ("AIP_PREDICT_ROUTE", "/p"),
        "health_route": ("AIP_HEALTH_ROUTE", "/h")}


def test_sagemaker_sets_the_port_and_vertex_wins_when_both_do():
    assert platform_overrides({"SAGEMAKER_BIND_TO_PORT": "8080"}) == {"http_port": ("SAGEMAKER_BIND_TO_PORT", "8080")}
    assert platform_overrides({"SAGEMAKER_BIND_TO_PORT": "8080", "AIP_HTTP_PORT": "7070"}) == {
        "http_port": ("AIP_HTTP_PORT", "7070")}


def test_empty_variables_set_nothing():
    assert platform_overrides({"AIP_HTTP_PORT": "", "AIP_PREDICT_ROUTE": ""}) == {}


def test_memory_budget_and_idle_unload_need_model_control_on_demand():
    with pytest.raises(InvalidSettingsError) as caught:
        load_settings({"memory_budget": "2GiB"}, flags=["memory_budget"])
    assert "--memory-budget" in str(caught.value)
    assert "--model-control on-demand" in str(caught.value)
    settings = load_settings({"model_control": "on-demand", "memory_budget": "2GiB", "idle_unload_s": 30})
    assert settings.memory_budget == 2 * 1024 ** 3
    assert settings.idle_unload_s == 30
