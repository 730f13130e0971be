"""docs/reference.md is exactly what scripts/generate_reference.py writes from the code, so it cannot drift
from the settings, model.toml keys and runtime options it documents."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest
from pydantic import BaseModel, ConfigDict

from cli_runner import ROOT
from inferd.config import ModelConfig
from inferd.runtimes.options import OPTIONS
from inferd.settings import ServerSettings


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_reference", ROOT / "scripts" / "generate_reference.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_reference_is_what_the_code_says():
    written = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    assert written == generator().render(), "regenerate with: .venv/bin/python scripts/generate_reference.py"


def test_every_setting_key_and_option_is_on_the_page():
    page = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    for name in ServerSettings.model_fields:
        assert f"| `{name}` | `INFERD_{name.upper()}`" in page
    for name in ("strict_readiness", "default_model", "predict_route", "health_route"):
        row = next(line for line in page.splitlines() if line.startswith(f"| `{name}` |"))
        assert len(row.rsplit("|", 2)[1].strip()) > 20, row  # says what it means
    assert "| `default_priority` | int ≥ 1 | unset | Priority of requests that ask for none" in page
    for runtime, schema in OPTIONS.items():
        assert f"`[options]` of the `{runtime}` runtime" in page
        for key in schema.model_fields:
            assert f"| `{key}` |" in page
    for table in ("versions", "batching", "queue", "instances", "capture"):
        assert f"### `[{table}]`" in page
    assert set(ModelConfig.model_fields) >= {"runtime", "artifact", "options"}


def test_a_field_without_a_docstring_is_refused():
    class Undocumented(BaseModel):
        model_config = ConfigDict(use_attribute_docstrings=True)

        documented: int = 1
        """Says what it is."""
        bare: int = 2

    with pytest.raises(ValueError, match=r"Undocumented\.bare has no docstring"):
        list(generator().table("t", Undocumented))


def test_platform_variables_are_listed_with_the_setting_they_set():
    page = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    for line in ("| `AIP_HTTP_PORT` | `http_port` |", "| `SAGEMAKER_BIND_TO_PORT` | `http_port` |",
                 "| `AIP_PREDICT_ROUTE` | `predict_route` |", "| `AIP_HEALTH_ROUTE` | `health_route` |"):
        assert line in page
