"""The artifact's sha256 in the V2 model metadata of the session server (also through tritonclient) and in
``inferd models show``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import tritonclient.http as httpclient

from cli_runner import inferd
from server_process import ServerProcess


def test_model_metadata_carries_the_artifact_sha256(server: ServerProcess, e2e_repo: Path) -> None:
    expected = hashlib.sha256((e2e_repo / "adder" / "1" / "model.py").read_bytes()).hexdigest()
    body = httpx.get(server.url + "/v2/models/adder").json()
    assert body["parameters"] == {"sha256": expected}
    assert httpx.get(server.url + "/v2/models/adder/versions/1").json()["parameters"] == {"sha256": expected}
    with httpclient.InferenceServerClient(server.url.removeprefix("http://")) as client:
        metadata = client.get_model_metadata("adder")
    assert metadata["name"] == "adder"
    assert metadata["parameters"]["sha256"] == expected


def test_models_show_prints_the_sha256(e2e_repo: Path) -> None:
    expected = hashlib.sha256((e2e_repo / "adder" / "1" / "model.py").read_bytes()).hexdigest()
    result = inferd("models", "show", str(e2e_repo), "adder")
    assert result.returncode == 0, result.stderr
    assert f"sha256 {expected}" in result.stdout
