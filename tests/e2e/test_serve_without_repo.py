"""``inferd serve`` with no REPO, as the platforms start it (SageMaker: ``docker run IMAGE serve``): a real server
finds its models through INFERD_REPOSITORY or Vertex AI's AIP_STORAGE_URI (a remote one copied first) and answers;
under SageMaker it looks in /opt/ml/model; with nothing to go on it says what to give."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from cli_runner import inferd
from echo_models import write_echo_models
from server_process import ServerProcess

SAGEMAKER_MODEL_DIR = Path("/opt/ml/model")


def _infer(server: ServerProcess) -> list[float]:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2.5]}]}
    response = httpx.post(f"{server.url}/v2/models/echo_fp32/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return list(response.json()["outputs"][0]["data"])


@pytest.mark.parametrize("how", ["INFERD_REPOSITORY", "AIP_STORAGE_URI"])
def test_a_server_without_repo_serves_the_repository_the_environment_names(how, tmp_path):
    models = tmp_path / "models"
    write_echo_models(models)
    value = str(models) if how == "INFERD_REPOSITORY" else f"local://{models}"  # local:// is fetched as remote
    state = tmp_path / "state"
    server = ServerProcess(None, tmp_path / "serve.log", env={how: value, "INFERD_STATE_DIR": str(state)})
    for running in server.serving():
        assert _infer(running) == [1.5, 2.5]
    if how == "AIP_STORAGE_URI":
        (copy,) = (state / "storage").iterdir()
        assert (copy / "echo_fp32" / "1" / "model.py").is_file()


@pytest.mark.skipif(SAGEMAKER_MODEL_DIR.exists(), reason="this machine has a /opt/ml/model")
def test_under_sagemaker_the_repository_is_opt_ml_model():
    run = inferd("serve", "--http-port", "0", "--grpc-port", "0", timeout=60, env={"SAGEMAKER_BIND_TO_PORT": "0"})
    assert run.returncode == 2, run.stderr
    assert "model repository /opt/ml/model does not exist" in run.stderr


@pytest.mark.skipif(SAGEMAKER_MODEL_DIR.exists(), reason="this machine has a /opt/ml/model")
def test_with_nothing_to_go_on_it_says_what_to_give(tmp_path):
    run = inferd("serve", cwd=tmp_path, timeout=60)
    assert run.returncode == 2, run.stderr
    assert "no model repository: give REPO, or set INFERD_REPOSITORY" in run.stderr
