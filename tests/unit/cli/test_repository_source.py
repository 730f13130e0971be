"""Where ``inferd serve`` without REPO finds the models: INFERD_REPOSITORY, SageMaker's /opt/ml/model, Vertex AI's
AIP_STORAGE_URI (served in place when local, copied once when remote), and the message when nothing names one."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferd.cli.repository_source import NoRepositoryError, find_repository, storage_folder


def _models(root: Path) -> Path:
    (root / "m" / "1").mkdir(parents=True)
    (root / "m" / "1" / "model.py").write_text("# a model\n")
    (root / "m" / "model.toml").write_text("")
    return root


def test_inferd_repository_comes_first(tmp_path):
    env = {"INFERD_REPOSITORY": "/srv/models", "SAGEMAKER_REGION": "eu-west-1", "AIP_STORAGE_URI": "gs://b/m"}
    assert find_repository(env, sagemaker_dir=tmp_path) == Path("/srv/models")


@pytest.mark.parametrize("variable", ["SAGEMAKER_BIND_TO_PORT", "SAGEMAKER_PROGRAM", "SM_MODEL_DIR"])
def test_a_sagemaker_variable_means_opt_ml_model(variable, tmp_path):
    assert find_repository({variable: "x", "AIP_STORAGE_URI": "gs://b/m"}, sagemaker_dir=tmp_path / "no") \
        == tmp_path / "no"


def test_the_default_folder_is_opt_ml_model():
    assert find_repository({"SM_MODEL_DIR": "/opt/ml/model"}) == Path("/opt/ml/model")


@pytest.mark.parametrize("form", ["{}", "file://{}"])
def test_a_local_storage_uri_is_served_where_it_is(form, tmp_path):
    uri = form.format(tmp_path / "models")
    assert find_repository({"AIP_STORAGE_URI": uri}, sagemaker_dir=tmp_path / "no") == tmp_path / "models"


def test_a_remote_storage_uri_is_copied_once_into_the_state_dir(tmp_path):
    source = _models(tmp_path / "bucket")
    uri = f"local://{source}"  # fsspec's local file system under another name: taken for remote, so copied
    copy = find_repository({"AIP_STORAGE_URI": uri}, state_dir=tmp_path / "state", sagemaker_dir=tmp_path / "no")
    assert copy.parent == tmp_path / "state" / "storage"
    assert sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*")) == \
        ["m", "m/1", "m/1/model.py", "m/model.toml"]
    assert (copy / "m" / "1" / "model.py").read_text() == "# a model\n"
    (source / "m" / "1" / "model.py").write_text("# changed\n")
    assert storage_folder(uri, tmp_path / "state" / "storage") == copy  # the copy is kept: not fetched again
    assert (copy / "m" / "1" / "model.py").read_text() == "# a model\n"
    assert [p.name for p in copy.parent.iterdir()] == [copy.name]  # no half-made copy left beside it


def test_the_state_dir_comes_from_inferd_state_dir(tmp_path):
    source = _models(tmp_path / "bucket")
    env = {"AIP_STORAGE_URI": f"local://{source}", "INFERD_STATE_DIR": str(tmp_path / "st")}
    assert find_repository(env, sagemaker_dir=tmp_path / "no").parent == tmp_path / "st" / "storage"


def test_a_remote_uri_that_cannot_be_copied_says_so(tmp_path):
    with pytest.raises(NoRepositoryError, match=r"AIP_STORAGE_URI local://.*missing: not a folder"):
        storage_folder(f"local://{tmp_path / 'missing'}", tmp_path / "cache")
    with pytest.raises(NoRepositoryError, match="AIP_STORAGE_URI nosuchscheme://b/m: cannot copy it"):
        storage_folder("nosuchscheme://b/m", tmp_path / "cache")
    assert not any((tmp_path / "cache").glob("*"))


def test_opt_ml_model_without_variables_when_it_is_there(tmp_path):
    assert find_repository({}, sagemaker_dir=tmp_path) == tmp_path


def test_nothing_names_a_repository(tmp_path):
    with pytest.raises(NoRepositoryError, match="give REPO, or set INFERD_REPOSITORY"):
        find_repository({"PATH": "/bin"}, sagemaker_dir=tmp_path / "no")
