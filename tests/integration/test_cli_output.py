"""Output into a pipe, as a script or a CI log gets it (stdout and stderr are pipes, COLUMNS is unset): no line
is wrapped or cut, where Rich would wrap at 80 columns."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from batch_models import FEATURES, SLOW, feature_table, write_python_model, write_table
from cli_runner import BIN, cli_env
from fakes import FAILING, write_model
from server_process import ServerProcess


def piped(*args: str) -> subprocess.CompletedProcess[str]:
    env = cli_env()
    env.pop("COLUMNS")
    env.pop("LINES", None)
    return subprocess.run([str(BIN / "inferd"), *args], capture_output=True, text=True, timeout=120, check=False,
                          env=env)


def test_long_lines_stay_whole(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_python_model(root, "slow", SLOW)
    out = tmp_path / ("an-output-folder-whose-name-is-long-enough-to-pass-eighty-columns-" * 2)
    source = write_table(feature_table(5), tmp_path / "in.csv")
    result = piped("batch", "run", str(root), "slow", "-i", str(source), "-o", str(out), "--map",
                   "input=" + ",".join(FEATURES))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "batch job succeeded: 5 of 5 rows scored"
    assert f"│ output       │ {out / 'in.csv'} │" in result.stdout.splitlines()
    refused = piped("batch", "run", str(root), "slow", "-i", str(source), "-o", str(out), "--map", "input=f0,nope")
    (line,) = refused.stderr.splitlines()
    assert line.startswith("error: ")
    assert "'nope'" in line


@pytest.fixture
def jobs_server(tmp_path: Path) -> Iterator[ServerProcess]:
    root = tmp_path / "models"
    write_model(root, "failing", FAILING)
    yield from ServerProcess(root, tmp_path / "serve.log").serving()


def test_jobs_list_keeps_ids_and_timestamps_whole(jobs_server: ServerProcess) -> None:
    bodies = [[1, 2], [-1]]  # the second one fails with a long error message, which must not push the rest
    with httpx.Client(base_url=jobs_server.url, timeout=10) as client:
        ids = [client.post("/v2/models/failing/infer-async", json={"inputs": [
            {"name": "x", "datatype": "INT64", "shape": [len(data)], "data": data}]}).json()["id"] for data in bodies]
        deadline = time.monotonic() + 60
        while True:
            jobs = [client.get(f"/v2/jobs/{job_id}").json() for job_id in ids]
            if all(job["finished_at"] for job in jobs):
                break
            assert time.monotonic() < deadline, jobs
            time.sleep(0.05)
    listed = piped("jobs", "list", "--url", jobs_server.url)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    for job in jobs:
        (row,) = [line for line in lines if job["id"] in line]  # one line per job: nothing wrapped onto a next
        assert job["created_at"] in row
        assert job["finished_at"] in row
    assert "negative values are not allowed" in listed.stdout
