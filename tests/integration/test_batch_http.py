"""A batch job started over HTTP on a real ``inferd serve``, polled to the end."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from batch_models import FEATURES, SLOW, feature_table, read_output, write_python_model, write_table
from cli_runner import inferd
from server_process import ServerProcess


def test_post_a_job_then_follow_its_progress(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_python_model(root, "slow", SLOW)
    work = tmp_path / "work"
    table = feature_table(400)
    source = write_table(table, work / "in.csv")
    server = ServerProcess(root, tmp_path / "server.log", env={"INFERD_BATCH_ROOTS": json.dumps([str(work)])})
    server.start()
    try:
        body = {"model": "slow", "input": str(source), "output": str(work / "out"), "batch_size": 20,
                "concurrency": 1, "key": "id", "mapping": {"input": ",".join(FEATURES)}}
        reply = httpx.post(server.url + "/v2/batch/jobs", json=body, timeout=10)
        assert reply.status_code == 202, reply.text
        url = server.url + reply.json()["status_url"]
        seen_running = False
        deadline = time.monotonic() + 60
        while True:
            status = httpx.get(url, timeout=10).json()
            if status["state"] == "running" and 0 < status["rows_done"] < 400:
                seen_running = True
                assert status["rows_per_s"] > 0
                assert status["rows_total"] is not None
                assert status["rows_total_is_estimate"]
            if status["state"] not in ("queued", "running"):
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
        assert status["state"] == "succeeded", status
        assert seen_running, "never saw the job part-way"
        assert status["summary"]["rows_out"] == 400
        assert status["rows_total"] == 400
        out = read_output(work / "out" / "in.csv")
        assert out.column("id").to_pylist() == table.column("id").to_pylist()
        job_id = reply.json()["id"]
        listed = inferd("jobs", "list", "--url", server.url)  # asynchronous jobs (none here) and batch jobs
        assert listed.returncode == 0, listed.stderr
        assert job_id in listed.stdout
        assert "succeeded" in listed.stdout
        assert job_id not in inferd("jobs", "list", "--model", "other", "--url", server.url).stdout
        shown = inferd("jobs", "show", job_id, "--url", server.url)
        assert shown.returncode == 0, shown.stderr
        assert "rows_done" in shown.stdout
        assert "rows_out 400" in shown.stdout
        ended = inferd("jobs", "cancel", job_id, "--url", server.url)
        assert ended.returncode == 1
        assert "is succeeded; only a queued or running job can be cancelled" in ended.stderr
        assert "no asynchronous or batch job 'nobody'" in inferd("jobs", "cancel", "nobody", "--url", server.url).stderr
        missing = inferd("jobs", "show", "nobody", "--url", server.url)
        assert missing.returncode == 1
        assert "no asynchronous or batch job 'nobody'" in missing.stderr
        refused = httpx.post(server.url + "/v2/batch/jobs", json={**body, "output": str(tmp_path / "elsewhere")},
                             timeout=10)
        assert refused.status_code == 403
    finally:
        assert server.stop() == 0, server.log()
