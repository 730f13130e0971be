"""A full disk under the state folder, on a real small filesystem (a 4 MiB tmpfs mounted for the test): submissions
are refused with 503 and Retry-After naming the folder, a job whose result cannot be stored waits rather than
staying ``running`` until a restart, and once space is freed it completes and submissions are accepted again, all
on the same server process. Needs root (``mount``); skipped with the reason otherwise."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from fakes import write_model
from server_process import ServerProcess

GATED_BIG = """
import time
from pathlib import Path

import numpy as np

class Model:
    inputs = [{"name": "x", "datatype": "INT64", "shape": [-1, -1]}]
    outputs = [{"name": "y", "datatype": "INT64", "shape": [-1, -1]}]

    def load(self, path):
        self.gate = Path(path) / "open"

    def predict(self, inputs):
        value = int(inputs["x"][0, 0])
        deadline = time.monotonic() + 60
        while value == 99 and not self.gate.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        rows = inputs["x"].shape[0]  # 20 000 values a row: about 100 KiB of JSON
        return {"y": np.full((rows, 20_000), value * 2, dtype=np.int64)}
"""
INLINE = 512 * 1024
"""async_inline_payload_bytes: bodies and results up to this stay in the database, larger ones go to files."""


def body(x: int, values: int = 1) -> bytes:
    return orjson.dumps({"inputs": [{"name": "x", "datatype": "INT64", "shape": [1, values], "data": [x] * values}]})


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "state"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (mount -t tmpfs); run as root to test a full disk")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder: Path) -> Path:
    """Write a file in ``folder`` until the filesystem has no byte left."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as out:
        for size in (64 * 1024, 4096, 1):
            failed: OSError | None = None
            while failed is None:
                try:
                    out.write(b"\0" * size)
                except OSError as exc:
                    failed = exc
            assert failed.errno == errno.ENOSPC, failed
    return filler


def wait_status(client: httpx.Client, job_id: str, statuses: tuple[str, ...], timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status: dict[str, Any] = client.get(f"/v2/jobs/{job_id}").json()
        if status["status"] in statuses:
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} is {status['status']}, not {statuses}")


def test_a_full_disk_is_503_then_the_stuck_job_completes_once_space_is_freed(tmp_path, small_disk):
    repo = tmp_path / "models"
    gate = write_model(repo, "gated", GATED_BIG) / "1" / "open"
    server = ServerProcess(repo, tmp_path / "serve.log", extra_args=["--state-dir", str(small_disk)],
                           env={"INFERD_ASYNC_INLINE_PAYLOAD_BYTES": str(INLINE)}).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.post("/v2/models/gated/infer-async", content=body(99),
                               headers={"Inference-Id": "stuck"}).status_code == 202
            wait_status(client, "stuck", ("running",))
            filler = fill(small_disk)

            gate.touch()  # its ~100 KiB result cannot be stored now; the job must wait, not give up
            inline = client.post("/v2/models/gated/infer-async", content=body(1, 150_000))  # ~300 KiB: in SQLite
            to_file = client.post("/v2/models/gated/infer-async", content=body(1, 300_000))  # ~600 KiB: a file
            for refused, cause in ((inline, "database or disk is full"), (to_file, "No space left on device")):
                assert refused.status_code == 503, refused.text
                assert refused.headers["retry-after"] == "5"
                assert refused.json()["error"] == (
                    f"the state folder {small_disk} is out of disk space ({cause}): asynchronous jobs cannot be "
                    "stored until space is freed there (real-time inference is unaffected)")
            assert client.post("/v2/models/gated/infer", content=body(2)).status_code == 200  # real time goes on
            time.sleep(1)  # several store retries fail meanwhile
            assert client.get("/v2/jobs/stuck").json()["status"] == "running"
            assert sorted(p.name for p in (small_disk / "payloads").iterdir()) == []  # no half-written files

            filler.unlink()  # space is back: no restart
            done = wait_status(client, "stuck", ("succeeded", "failed"))
            assert (done["status"], done["attempts"]) == ("succeeded", 1)
            assert client.get("/v2/jobs/stuck/result").json()["outputs"][0]["data"][:3] == [198, 198, 198]
            for request in (body(3, 150_000), body(4, 300_000)):
                accepted = client.post("/v2/models/gated/infer-async", content=request)
                assert accepted.status_code == 202, accepted.text
                finished = wait_status(client, accepted.json()["id"], ("succeeded", "failed"))
                assert finished["status"] == "succeeded", finished["error"]
    finally:
        assert server.stop() == 0, server.log()
    log = server.log()
    assert "Traceback" not in log, log
    assert f"refusing asynchronous submissions: the state folder {small_disk} is out of disk space" in log
    assert "trying again until it is stored" in log


def test_a_server_restarted_on_a_full_disk_serves_and_recovers_its_jobs_once_space_is_freed(tmp_path, small_disk):
    """kill -9 while a job runs, the disk fills, the server comes back: it starts (real time and job reads work,
    submissions are 503), and once space is freed the job cut short runs again and completes, no second restart."""
    repo = tmp_path / "models"
    gate = write_model(repo, "gated", GATED_BIG) / "1" / "open"
    args, env = ["--state-dir", str(small_disk)], {"INFERD_ASYNC_INLINE_PAYLOAD_BYTES": str(INLINE)}
    first = ServerProcess(repo, tmp_path / "first.log", extra_args=args, env=env).start()
    try:
        with httpx.Client(base_url=first.url, timeout=30) as client:
            assert client.post("/v2/models/gated/infer-async", content=body(99),
                               headers={"Inference-Id": "cut-short"}).status_code == 202
            wait_status(client, "cut-short", ("running",))
    finally:
        first.kill()
    filler = fill(small_disk)
    gate.touch()
    second = ServerProcess(repo, tmp_path / "second.log", extra_args=args, env=env).start()
    try:
        with httpx.Client(base_url=second.url, timeout=30) as client:
            assert client.post("/v2/models/gated/infer", content=body(2)).status_code == 200
            assert client.get("/v2/jobs/cut-short").json()["status"] in ("running", "queued")
            refused = client.post("/v2/models/gated/infer-async", content=body(1, 150_000))
            assert refused.status_code == 503, refused.text
            filler.unlink()
            done = wait_status(client, "cut-short", ("succeeded", "failed"))
            assert (done["status"], done["attempts"]) == ("succeeded", 2)
    finally:
        assert second.stop() == 0, second.log()
    assert "left running by the last server cannot be queued again yet" in second.log()
    assert "Traceback" not in second.log(), second.log()
