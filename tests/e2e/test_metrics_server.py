"""``/metrics`` of a real ``inferd serve``: requests over REST and gRPC, failures by code, histograms, queue
depth, loaded models, a worker process killed and replaced, an asynchronous job and a batch job."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from batch_models import PICKY, feature_table, write_python_model, write_table
from fakes import ADDER, FAILING, write_model
from server_process import ServerProcess

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

ADDER_BODY = {"inputs": [{"name": "a", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]},
                         {"name": "b", "datatype": "FP32", "shape": [2, 3], "data": [1, 1, 1, 1, 1, 1]}]}


@pytest.fixture(scope="module")
def metrics_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("metrics")
    models = root / "models"
    write_model(models, "adder", ADDER)
    write_model(models, "failing", FAILING)
    write_model(models, "proc", ADDER, toml='[instances]\nkind = "process"\n')
    write_python_model(models, "picky", PICKY)
    (root / "work").mkdir()
    process = ServerProcess(models, root / "serve.log", env={"INFERD_BATCH_ROOTS": json.dumps([str(root / "work")])})
    yield from process.serving(timeout=120)


def scrape(server: ServerProcess) -> Samples:
    reply = httpx.get(server.url + "/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    found: Samples = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            found[sample.name, frozenset(sample.labels.items())] = sample.value
    return found


def get(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def test_rest_and_grpc_requests_and_failures_are_counted(metrics_server: ServerProcess) -> None:
    import tritonclient.grpc as grpcclient

    adder = {"model": "adder", "version": "1"}
    before = scrape(metrics_server)
    with httpx.Client(base_url=metrics_server.url) as client:
        for _ in range(3):
            assert client.post("/v2/models/adder/infer", json=ADDER_BODY).status_code == 200
        bad = {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [-1]}]}
        assert client.post("/v2/models/failing/infer", json=bad).status_code == 500
        wrong = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}
        assert client.post("/v2/models/failing/infer", json=wrong).status_code == 400
    grpc = grpcclient.InferenceServerClient(metrics_server.grpc_url)
    inputs = [grpcclient.InferInput(n, [1, 3], "FP32") for n in ("a", "b")]
    for item in inputs:
        item.set_data_from_numpy(np.ones((1, 3), dtype=np.float32))
    grpc.infer("adder", inputs)
    grpc.close()
    after = scrape(metrics_server)

    def delta(name: str, **labels: str) -> float:
        return get(after, name, **labels) - get(before, name, **labels)

    assert delta("inferd_request_success_total", **adder) == 4, "3 over REST, 1 over gRPC"
    assert delta("inferd_inference_rows_total", **adder) == 7
    assert delta("inferd_request_failure_total", model="failing", version="1", code="INTERNAL") == 1
    assert delta("inferd_request_failure_total", model="failing", version="1", code="INVALID_ARGUMENT") == 1
    for histogram in ("inferd_request_duration_seconds", "inferd_queue_duration_seconds",
                      "inferd_compute_duration_seconds"):
        assert delta(f"{histogram}_count", **adder) == 4
        assert delta(f"{histogram}_bucket", **adder, le="+Inf") == 4
    assert get(after, "inferd_request_duration_seconds_sum", **adder) > 0
    assert delta("inferd_batch_size_count", **adder) == 4
    assert delta("inferd_batch_size_bucket", **adder, le="1") == 1, "the gRPC request's one row"
    assert delta("inferd_batch_size_bucket", **adder, le="2") == 4, "buckets are cumulative"
    assert get(after, "inferd_queue_depth", **adder) == 0
    assert get(after, "inferd_model_loaded", **adder) == 1
    assert get(after, "inferd_models_loaded") == 4


def _workers(server_pid: int) -> list[int]:
    """The server's worker processes (multiprocessing spawn children), by pid."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == server_pid and b"spawn_main" in command:
            found.append(int(entry.name))
    return found


def test_a_killed_worker_process_counts_as_a_restart(metrics_server: ServerProcess) -> None:
    proc = {"model": "proc", "version": "1"}
    assert get(scrape(metrics_server), "inferd_worker_restarts_total", **proc) == 0
    assert metrics_server.process is not None
    [worker] = _workers(metrics_server.process.pid)
    os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while get(scrape(metrics_server), "inferd_worker_restarts_total", **proc) < 1:
        assert time.monotonic() < deadline, "no restart counted"
        time.sleep(0.1)
    metrics_server.wait(timeout=30)  # the replacement loads: ready again
    assert httpx.post(metrics_server.url + "/v2/models/proc/infer", json=ADDER_BODY).status_code == 200


def test_async_and_batch_jobs_are_counted_by_status(metrics_server: ServerProcess) -> None:
    with httpx.Client(base_url=metrics_server.url, timeout=30) as client:
        job = client.post("/v2/models/adder/infer-async", json=ADDER_BODY)
        assert job.status_code == 202, job.text
        work = metrics_server.repository.parent / "work"  # under the server's batch_roots
        source = write_table(feature_table(40, seed=1), work / "in.parquet")
        batch = client.post("/v2/batch/jobs", json={"model": "picky", "input": str(source),
                                                     "output": str(work / "out"), "mapping": {"input": "f0,f1,f2,f3"},
                                                     "max_errors": 0.99})
        assert batch.status_code == 202, batch.text
        deadline = time.monotonic() + 30
        while True:
            found = scrape(metrics_server)
            done = (get(found, "inferd_async_jobs", model="adder", version="", status="succeeded") >= 1
                    and get(found, "inferd_batch_jobs", model="picky", state="succeeded") == 1)
            if done:
                break
            assert time.monotonic() < deadline, f"jobs not counted: {client.get('/v2/jobs').text}"
            time.sleep(0.1)
    assert get(found, "inferd_async_jobs", model="adder", version="", status="queued") == 0
