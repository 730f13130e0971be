"""The repository over real folders: layouts, versions, policies and every way a model can fail to load."""

import sys
from pathlib import Path

import pytest

from fakes import ADDER, write_model
from inferd.errors import ErrorCode, InferError
from inferd.repository import ModelRepository, State

SCALE = """
import numpy as np

class Model:
    inputs = [{"name": "x", "datatype": "FP64", "shape": [-1]}]
    outputs = [{"name": "y", "datatype": "FP64", "shape": [-1]}]

    def load(self, path):
        self.factor = float((path / "factor.txt").read_text())

    def predict(self, inputs):
        return {"y": inputs["x"] * self.factor}
"""


def versioned_scale(root: Path, versions: dict[int, str], toml: str | None = None) -> None:
    for number, factor in versions.items():
        folder = write_model(root, "scale", SCALE, toml=toml, version=number)
        (folder / str(number) / "factor.txt").write_text(factor)


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ModelRepository(tmp_path / "nope")


def test_empty_repository_loads_nothing(repo_root):
    repository = ModelRepository(repo_root)
    assert repository.load_all() == []
    with pytest.raises(InferError, match="Request for unknown model: 'x' is not found; served models: none") as info:
        repository.get("x")
    assert info.value.code is ErrorCode.NOT_FOUND


def test_bare_artifact_is_version_one(repo_root):
    write_model(repo_root, "adder", ADDER, version=None)
    model = ModelRepository(repo_root).load("adder")
    assert list(model.versions) == [1]
    assert model.versions[1].state is State.READY


def test_latest_policy_serves_the_newest_version(repo_root):
    versioned_scale(repo_root, {1: "1", 2: "2", 10: "10"})
    repository = ModelRepository(repo_root)
    model = repository.load("scale")
    assert sorted(model.versions) == [10]
    assert repository.get("scale").version == 10
    with pytest.raises(InferError, match="has no version 2; versions served: 10") as info:
        repository.get("scale", 2)
    assert info.value.code is ErrorCode.NOT_FOUND


def test_all_and_specific_policies(repo_root):
    versioned_scale(repo_root, {1: "1", 2: "2", 3: "3"}, toml='[versions]\npolicy = "all"\n')
    repository = ModelRepository(repo_root)
    assert sorted(repository.load("scale").versions) == [1, 2, 3]
    assert repository.get("scale", 2).version == 2
    (repo_root / "scale" / "model.toml").write_text('[versions]\npolicy = "specific"\nspecific = [1, 3]\n')
    assert sorted(repository.load("scale").versions) == [1, 3]


def test_one_broken_model_does_not_stop_the_others(repo_root):
    write_model(repo_root, "adder", ADDER)
    write_model(repo_root, "broken", "this is not python(", version=1)
    repository = ModelRepository(repo_root)
    models = {m.name: m for m in repository.load_all()}
    assert models["adder"].versions[1].state is State.READY
    broken = models["broken"].versions[1]
    assert broken.state is State.UNAVAILABLE
    assert "python runtime" in broken.reason
    assert "SyntaxError" in broken.reason or "invalid syntax" in broken.reason
    with pytest.raises(InferError, match="model 'broken' is not ready") as info:
        repository.get("broken")
    assert info.value.code is ErrorCode.UNAVAILABLE


def test_unknown_artifact_lists_what_it_found(repo_root):
    folder = repo_root / "mystery" / "1"
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(b"\x00")
    version = ModelRepository(repo_root).load("mystery").versions[1]
    assert version.state is State.UNAVAILABLE
    assert "no known artifact (found weights.bin; expected one of model.onnx" in version.reason


def test_two_artifacts_in_one_version_folder(repo_root):
    folder = write_model(repo_root, "twice", ADDER)
    (folder / "1" / "model.onnx").write_bytes(b"")
    version = ModelRepository(repo_root).load("twice").versions[1]
    assert version.state is State.UNAVAILABLE
    assert "more than one artifact (model.onnx, model.py); set 'artifact' in model.toml" in version.reason
    (folder / "model.toml").write_text('artifact = "model.py"\n')
    assert ModelRepository(repo_root).load("twice").versions[1].state is State.READY


def test_empty_model_folder(repo_root):
    (repo_root / "empty").mkdir()
    model = ModelRepository(repo_root).load("empty")
    assert "no version folders (1/, 2/, ...) and no artifact" in model.reason


def test_bad_model_toml_makes_the_model_unavailable_with_file_and_line(repo_root):
    write_model(repo_root, "adder", ADDER, toml='runtime = "python"\nbatch = 4\n')
    repository = ModelRepository(repo_root)
    model = repository.load("adder")
    assert model.reason == f"{repo_root / 'adder' / 'model.toml'}:2: key 'batch': unknown key"
    with pytest.raises(InferError, match="key 'batch': unknown key"):
        repository.get("adder")


def test_unknown_runtime_name(repo_root):
    write_model(repo_root, "adder", ADDER, toml='runtime = "tensorflow"\n')
    version = ModelRepository(repo_root).load("adder")
    assert "unknown runtime 'tensorflow'" in version.versions[1].reason


def test_missing_extra_names_the_extra_and_others_still_load(repo_root, monkeypatch):
    monkeypatch.setitem(sys.modules, "xgboost", None)  # what find_spec reports when xgboost is not installed
    write_model(repo_root, "adder", ADDER)
    folder = repo_root / "eta" / "1"
    folder.mkdir(parents=True)
    (folder / "model.json").write_text("{}")
    models = {m.name: m for m in ModelRepository(repo_root).load_all()}
    assert models["adder"].versions[1].state is State.READY
    reason = models["eta"].versions[1].reason
    assert "xgboost runtime needs xgboost, which is not installed" in reason
    assert "pip install 'inferd[xgboost]'" in reason


def test_unload_and_reload(repo_root):
    write_model(repo_root, "adder", ADDER)
    repository = ModelRepository(repo_root)
    repository.load("adder")
    repository.unload("adder")
    with pytest.raises(InferError, match="version 1 is unloaded|is not ready") as info:
        repository.get("adder")
    assert info.value.code is ErrorCode.UNAVAILABLE
    with pytest.raises(InferError, match="is not loaded"):
        repository.unload("adder")
    repository.load("adder")
    assert repository.get("adder").state is State.READY


def test_load_refuses_names_outside_the_repository(repo_root):
    repository = ModelRepository(repo_root)
    for name in ("../etc", "missing", ".hidden"):
        with pytest.raises(InferError) as info:
            repository.load(name)
        assert info.value.code is ErrorCode.NOT_FOUND


def test_user_model_load_receives_its_version_folder(repo_root):
    versioned_scale(repo_root, {1: "2.5"})
    repository = ModelRepository(repo_root)
    repository.load("scale")
    runtime = repository.get("scale").runtime
    assert runtime is not None
    import numpy as np

    assert runtime.predict({"x": np.array([2.0])})["y"].tolist() == [5.0]


def test_on_disk_names_only_model_folders_of_the_repository(tmp_path):
    from inferd.repository import ModelRepository

    (tmp_path / "m").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "_private").mkdir()
    (tmp_path / "file").write_text("")
    repository = ModelRepository(tmp_path)
    assert repository.on_disk("m")
    assert not any(repository.on_disk(n) for n in (".hidden", "_private", "file", "..", "m/..", "", "nope"))
    assert sorted(n for n in ("m", ".hidden", "_private", "file") if repository.on_disk(n)) == repository.names()
