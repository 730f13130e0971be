"""Issue 23's probes of what a caller may make the server touch, against a real ``inferd serve``: callback
destinations (the probe's own SSRF URL refused with 400, the one allowed receiver called, a forged Host header
not echoed) and symbolic links out of ``batch_roots`` and ``async_input_roots`` (refused, naming the path and
the setting, nothing read or written outside)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from batch_models import FEATURES, PICKY, feature_table, write_python_model, write_table
from callback_receiver import CallbackReceiver
from server_process import ServerProcess

ADD = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


@dataclass
class Probed:
    server: ServerProcess
    receiver: CallbackReceiver
    work: Path
    outside: Path


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Probed]:
    root = tmp_path_factory.mktemp("probe")
    write_python_model(root / "models", "picky", PICKY)
    work, outside = root / "work", root / "outside"
    work.mkdir()
    outside.mkdir()
    with CallbackReceiver() as receiver:
        env = {"INFERD_BATCH_ROOTS": json.dumps([str(work)]), "INFERD_ASYNC_INPUT_ROOTS": json.dumps([str(work)]),
               "INFERD_ASYNC_CALLBACK_ALLOWED": json.dumps([receiver.url]), "INFERD_ASYNC_RETRY_BACKOFF_S": "0.05"}
        server = ServerProcess(root / "models", root / "serve.log", env=env).start()
        try:
            yield Probed(server, receiver, work, outside)
        finally:
            assert server.stop() == 0, server.log()


def wait(client: httpx.Client, url: str, key: str, done: tuple[str, ...]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status: dict[str, Any] = client.get(url).json()
        if status[key] in done:
            return status
        time.sleep(0.05)
    raise AssertionError(f"{url} still {status[key]}")


@pytest.mark.parametrize("url", ["http://127.0.0.1:27999/internal/admin?x=1", "http://[::ffff:127.0.0.1]:27999/",
                                 "http://2130706433:27999/", "http://169.254.169.254/latest/meta-data/",
                                 "http://10.0.0.1/"])
def test_the_probes_callback_urls_are_refused_at_submit(probed, url):
    reply = httpx.post(f"{probed.server.url}/v2/models/picky/infer-async", json=ADD, timeout=10,
                       headers={"Inference-Callback-Url": url})
    assert reply.status_code == 400
    assert "async_callback_allowed" in reply.json()["error"]


def test_the_allowed_receiver_gets_its_callback_and_no_link_echoes_the_host_header(probed):
    with httpx.Client(base_url=probed.server.url, timeout=10) as client:
        reply = client.post("/v2/models/picky/infer-async", json=ADD,
                            headers={"Inference-Callback-Url": probed.receiver.url, "Host": "evil.example"})
        assert reply.status_code == 202, reply.text
        job = reply.json()
        assert reply.headers["location"] == job["status_url"] == f"/v2/jobs/{job['id']}"
        status = wait(client, job["status_url"], "status", ("succeeded", "failed"))
        assert status["status"] == "succeeded"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and status["callback"]["state"] == "pending":
            time.sleep(0.05)
            status = client.get(job["status_url"]).json()
    assert status["callback"]["state"] == "delivered"
    assert [r["body"]["id"] for r in probed.receiver.received] == [job["id"]]
    assert probed.receiver.received[0]["body"]["status_url"] == job["status_url"]


def test_a_batch_job_does_not_read_an_input_linked_out_of_the_roots(probed):
    write_table(feature_table(10, seed=1), probed.work / "in" / "a.csv")
    write_table(feature_table(10, seed=2), probed.outside / "secret.csv")
    (probed.work / "in" / "b.csv").symlink_to(probed.outside / "secret.csv")
    with httpx.Client(base_url=probed.server.url, timeout=10) as client:
        reply = client.post("/v2/batch/jobs", json={"model": "picky", "input": str(probed.work / "in"),
                                                    "output": str(probed.work / "out"),
                                                    "mapping": {"input": ",".join(FEATURES)}})
        assert reply.status_code == 202, reply.text
        status = wait(client, reply.json()["status_url"], "state", ("succeeded", "failed"))
    assert status["state"] == "failed"
    assert f"input file {probed.work / 'in' / 'b.csv'} leads to {probed.outside / 'secret.csv'}" in status["error"]
    assert "batch_roots" in status["error"]


def test_a_batch_journal_linked_out_of_the_roots_is_not_written(probed):
    write_table(feature_table(10, seed=1), probed.work / "in2" / "a.csv")
    (probed.work / "out2").mkdir()
    (probed.outside / "journal").mkdir()
    (probed.work / "out2" / ".inferd-batch").symlink_to(probed.outside / "journal")
    with httpx.Client(base_url=probed.server.url, timeout=10) as client:
        reply = client.post("/v2/batch/jobs", json={"model": "picky", "input": str(probed.work / "in2"),
                                                    "output": str(probed.work / "out2"),
                                                    "mapping": {"input": ",".join(FEATURES)}})
        status = wait(client, reply.json()["status_url"], "state", ("succeeded", "failed"))
    assert status["state"] == "failed"
    assert "batch_roots" in status["error"]
    assert list((probed.outside / "journal").iterdir()) == []


def test_an_input_location_linked_out_of_the_roots_is_refused(probed):
    (probed.outside / "request.json").write_text(json.dumps(ADD))
    (probed.work / "request.json").symlink_to(probed.outside / "request.json")
    reply = httpx.post(f"{probed.server.url}/v2/models/picky/infer-async", timeout=10,
                       headers={"Inference-Input-Location": str(probed.work / "request.json")})
    assert reply.status_code == 400
    assert "outside the folders the async_input_roots setting allows" in reply.json()["error"]
