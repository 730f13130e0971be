"""FastInfer's reading of inference paths: model and version from the path, None for any other path, and a
bounded memory of the paths it has read."""

from __future__ import annotations

from pathlib import Path

from inferd.dataplane import DataPlane
from inferd.repository import ModelRepository
from inferd.server.rest import fast_infer
from inferd.server.rest.fast_infer import FastInfer


def _app(tmp_path: Path) -> FastInfer:
    def no_app() -> fast_infer.ASGIApp:
        raise AssertionError("not built here")

    return FastInfer(no_app, DataPlane(ModelRepository(tmp_path)), 1024)


def test_inference_paths_name_the_model_and_version(tmp_path):
    app = _app(tmp_path)
    assert app.infer_target(b"/v2/models/digits/infer") == ("digits", None)
    assert app.infer_target(b"/v2/models/digits/versions/2/infer") == ("digits", "2")
    assert app.infer_target(b"/v2/models/digits/infer") == ("digits", None)  # remembered, the same answer
    for other in (b"/v2/models/digits", b"/v2/models//infer", b"/v2/models/a/b/infer", b"/v1/models/digits:predict"):
        assert app.infer_target(other) is None


def test_the_paths_remembered_are_bounded(tmp_path):
    app = _app(tmp_path)
    for index in range(fast_infer._REMEMBERED_PATHS * 3):
        assert app.infer_target(b"/v2/models/m%d/infer" % index) == (f"m{index}", None)
    assert len(app.targets) <= fast_infer._REMEMBERED_PATHS
