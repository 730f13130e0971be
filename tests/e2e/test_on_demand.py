"""Model control on-demand, served by a real ``inferd serve``: a model loads on its first request (REST and gRPC),
concurrent first requests share one load, a failing load answers every waiting request with its error, the wait
counts against the request's timeout, metadata and readiness calls load nothing, and a hanging load is bounded
by the load timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from demand_models import infer_body, loads, write_counted
from server_process import ServerProcess


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("on-demand") / "models"
    write_counted(root, "cold", delay=0.5)
    write_counted(root, "crowd", delay=1.0)
    write_counted(root, "broken", delay=0.5, fail=True)
    write_counted(root, "quiet")
    write_counted(root, "patient", delay=1.0)
    write_counted(root, "by_grpc", delay=0.2)
    return root


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(repo, tmp_path_factory.mktemp("logs") / "serve.log",
                            extra_args=["--model-control", "on-demand", "--load-timeout-s", "60"])
    yield from process.serving()


def test_ready_at_once_with_nothing_loaded(server, repo):
    index = httpx.post(server.url + "/v2/repository/index", json={}).json()
    assert {row["name"]: row["state"] for row in index}["cold"] == "UNLOADED"
    assert loads(repo, "cold") == 0


def test_first_request_waits_for_the_load_and_is_answered(server, repo):
    response = httpx.post(server.url + "/v2/models/cold/infer", json=infer_body([1.0, 2.0]), timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [2.0, 4.0]
    assert httpx.get(server.url + "/v2/models/cold/ready").json()["ready"] is True
    stats = httpx.get(server.url + "/v2/models/cold/stats").json()["model_stats"][0]
    assert stats["load_ns"] >= 500_000_000  # the load's delay: what the cold request paid
    assert loads(repo, "cold") == 1


def test_200_concurrent_first_requests_share_one_load(server, repo):
    async def crowd() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v2/models/crowd/infer", json=infer_body([float(i)]))
                                          for i in range(200)))

    responses = asyncio.run(crowd())
    assert [r.status_code for r in responses] == [200] * 200
    assert [r.json()["outputs"][0]["data"] for r in responses] == [[2.0 * i] for i in range(200)]
    assert loads(repo, "crowd") == 1


def test_a_failing_load_answers_every_waiting_request_with_its_error(server, repo):
    async def crowd() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v2/models/broken/infer", json=infer_body([1.0]))
                                          for _ in range(20)))

    responses = asyncio.run(crowd())
    assert {r.status_code for r in responses} == {503}
    assert all("this model refuses to load" in r.json()["error"] for r in responses)
    assert loads(repo, "broken") == 1
    again = httpx.post(server.url + "/v2/models/broken/infer", json=infer_body([1.0]))
    assert again.status_code == 503
    assert "this model refuses to load" in again.json()["error"]
    assert loads(repo, "broken") == 1  # a failed load is not tried again by every request


def test_metadata_and_readiness_calls_load_nothing(server, repo):
    assert httpx.get(server.url + "/v2/models/quiet/ready").json()["ready"] is False
    assert httpx.get(server.url + "/v2/models/quiet").status_code in (404, 503)
    assert httpx.get(server.url + "/v2/models/quiet/config").status_code in (404, 503)
    assert httpx.get(server.url + "/v2/health/ready").status_code == 200
    time.sleep(0.3)
    assert loads(repo, "quiet") == 0


def test_the_wait_for_the_load_counts_against_the_request_timeout(server, repo):
    response = httpx.post(server.url + "/v2/models/patient/infer", json=infer_body([1.0], timeout=100_000),
                          timeout=30)
    assert response.status_code == 504, response.text
    assert "to load" in response.json()["error"]
    assert httpx.post(server.url + "/v2/models/patient/infer", json=infer_body([1.0], timeout=100_000)
                      ).status_code == 200  # loaded now: the same timeout is plenty


def test_grpc_first_request_loads_the_model(server, repo):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("x", [3], "FP32")
    tensor.set_data_from_numpy(np.array([1, 2, 3], dtype=np.float32))
    result = client.infer("by_grpc", [tensor])
    assert result.as_numpy("y").tolist() == [2.0, 4.0, 6.0]
    assert loads(repo, "by_grpc") == 1


def test_a_hanging_load_is_bounded_by_the_load_timeout(tmp_path):
    root = tmp_path / "models"
    write_counted(root, "hangs", delay=6.0)
    write_counted(root, "fine")
    process = ServerProcess(root, tmp_path / "serve.log",
                            extra_args=["--model-control", "on-demand", "--load-timeout-s", "1"])
    try:
        process.start()
        response = httpx.post(process.url + "/v2/models/hangs/infer", json=infer_body([1.0]), timeout=30)
        assert response.status_code == 503, response.text
        assert "load_timeout_s" in response.json()["error"]
        again = httpx.post(process.url + "/v2/models/hangs/infer", json=infer_body([1.0]), timeout=30)
        assert again.status_code == 503  # no second load meanwhile
        assert "load_timeout_s" in again.json()["error"]
        fine = httpx.post(process.url + "/v2/models/fine/infer", json=infer_body([1.0]), timeout=30)
        assert fine.status_code == 200, fine.text  # the hung load holds up no other model
        deadline = time.monotonic() + 30
        while "its load ended after the load timeout" not in process.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        states = {r["name"]: r["state"] for r in httpx.post(process.url + "/v2/repository/index", json={}).json()}
        assert states["hangs"] == "UNLOADED", process.log()
        assert loads(root, "hangs") == 1
    finally:
        assert process.stop(timeout=30) == 0, process.log()


def test_every_entrance_loads_a_cold_model_v1_sagemaker_async_and_batch(tmp_path):
    import json

    from batch_models import FEATURES, SLOW, feature_table, read_output, write_python_model, write_table

    root = tmp_path / "models"
    for name in ("by_v1", "by_sagemaker", "by_async"):
        write_counted(root, name)
    write_python_model(root, "by_batch", SLOW)
    work = tmp_path / "work"
    source = write_table(feature_table(40), work / "in.csv")
    process = ServerProcess(root, tmp_path / "serve.log", extra_args=["--model-control", "on-demand"],
                            env={"INFERD_BATCH_ROOTS": json.dumps([str(work)])})
    try:
        process.start()
        with httpx.Client(base_url=process.url, timeout=60) as client:
            v1 = client.post("/v1/models/by_v1:predict", json={"instances": [1.0, 2.0]})
            assert v1.json() == {"predictions": [2.0, 4.0]}, v1.text
            sagemaker = client.post("/invocations", json={"instances": [3.0]},
                                    headers={"X-Amzn-SageMaker-Target-Model": "by_sagemaker.tar.gz"})
            assert sagemaker.status_code == 200, sagemaker.text
            assert sagemaker.json()["predictions"] == [6.0]
            accepted = client.post("/v2/models/by_async/infer-async", json=infer_body([4.0]))
            assert accepted.status_code == 202, accepted.text
            job_id = accepted.json()["id"]
            deadline = time.monotonic() + 60
            while client.get(f"/v2/jobs/{job_id}").json()["status"] != "succeeded":
                assert time.monotonic() < deadline, client.get(f"/v2/jobs/{job_id}").text
                time.sleep(0.05)
            assert client.get(f"/v2/jobs/{job_id}/result").json()["outputs"][0]["data"] == [8.0]
            body = {"model": "by_batch", "input": str(source), "output": str(work / "out"), "batch_size": 10,
                    "mapping": {"input": ",".join(FEATURES)}}
            reply = client.post("/v2/batch/jobs", json=body)
            assert reply.status_code == 202, reply.text
            while (status := client.get(reply.json()["status_url"]).json())["state"] in ("queued", "running"):
                assert time.monotonic() < deadline, status
                time.sleep(0.05)
            assert status["state"] == "succeeded", status
            assert read_output(work / "out" / "in.csv").num_rows == 40
    finally:
        assert process.stop() == 0, process.log()
