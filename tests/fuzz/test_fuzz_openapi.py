"""Schemathesis against a real ``inferd serve``: requests generated from the server's own OpenAPI schema
(every route, valid and invalid bodies, odd path parameters, headers) must never get a 5xx, and the server
must keep serving afterwards. A short run here; the long one is ``make fuzz`` (docs/fuzzing.md)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli_runner import BIN
from fakes import ADDER, write_model
from server_process import ServerProcess

ADD = {"inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]},
                  {"name": "b", "datatype": "FP32", "shape": [1, 3], "data": [1, 1, 1]}]}


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("fuzz")
    repo = root / "models"
    write_model(repo, "adder", ADDER)
    server = ServerProcess(repo, root / "serve.log").start()
    yield server
    assert server.stop() == 0, server.log()


@pytest.mark.slow
def test_no_server_errors_from_schema_driven_requests(fuzzed_server: ServerProcess, tmp_path: Path) -> None:
    seconds = os.environ.get("INFERD_FUZZ_SECONDS", "25")
    command = [str(BIN / "schemathesis"), "run", f"{fuzzed_server.url}/openapi.json",
               "--checks", "not_a_server_error", "--max-time", seconds, "--max-examples", "25",
               "--seed", os.environ.get("INFERD_FUZZ_SEED", "7"), "--warnings", "off", "--workers", "1",
               "--report", "junit", "--report-dir", str(tmp_path)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=int(seconds) + 120, check=False,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "generated" in run.stdout
    # still serving, and still right
    assert httpx.get(f"{fuzzed_server.url}/v2/health/live").status_code == 200
    httpx.post(f"{fuzzed_server.url}/v2/repository/models/adder/load", timeout=30)  # the fuzzer may have unloaded it
    answer = httpx.post(f"{fuzzed_server.url}/v2/models/adder/infer", json=ADD, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == [2, 3, 4]
    assert fuzzed_server.process is not None
    assert fuzzed_server.process.poll() is None
