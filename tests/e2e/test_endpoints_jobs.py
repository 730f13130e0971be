"""Endpoints and jobs on a real ``inferd serve``: a batch job naming an endpoint is pinned to one variant for its
whole run (its status says which), and an asynchronous job forces its variant in its body, never by a header
(a job keeps its body only: a header is refused, not silently dropped)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from endpoint_models import row, write_endpoint_repository
from server_process import ServerProcess

MIXED = {"variants": [{"name": "pos", "model": "scorer", "version": 1, "weight": 1},
                      {"name": "neg", "model": "scorer2", "weight": 1}]}
"""scorer answers 2x, scorer2 -x: every row of a job shows which variant scored it."""


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("work")
    rng = np.random.default_rng(0)
    x = rng.uniform(1, 2, size=(300, 3))  # all positive: the sign of a score names its variant
    pacsv.write_csv(pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2]}), folder / "in.csv")
    return folder


@pytest.fixture(scope="module")
def served(work: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = write_endpoint_repository(tmp_path_factory.mktemp("endpoints") / "models")
    process = ServerProcess(root, tmp_path_factory.mktemp("logs") / "serve.log",
                            env={"INFERD_BATCH_ROOTS": json.dumps([str(work)])})
    yield from process.serving()


@pytest.fixture
def http(served: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=30) as client:
        if client.get("/v2/endpoints/mixed").status_code == 404:
            assert client.put("/v2/endpoints/mixed", json=MIXED).status_code == 200
        yield client


def run_job(http: httpx.Client, work: Path, out: str, **extra: object) -> dict[str, object]:
    body = {"model": "mixed", "input": str(work / "in.csv"), "output": str(work / out), "batch_size": 16,
            "mapping": {"x": "a,b,c"}, **extra}
    reply = http.post("/v2/batch/jobs", json=body)
    assert reply.status_code == 202, reply.text
    deadline = time.monotonic() + 60
    while (status := http.get(reply.json()["status_url"]).json())["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    assert status["state"] == "succeeded", status
    return status


def signs(path: Path) -> set[float]:
    """The signs of every score in a job's output (the scores column, as the CSV writer wrote it)."""
    table = pacsv.read_csv(path)
    found: set[float] = set()
    for name in table.column_names:
        if name.startswith("scores"):
            for cell in table.column(name).to_pylist():
                values = json.loads(cell) if isinstance(cell, str) else [cell]
                found |= {float(np.sign(v)) for v in np.ravel(values)}
    assert found, table.column_names
    return found


def test_a_batch_job_on_an_endpoint_is_pinned_to_one_variant(http, work):
    landed = set()
    for attempt in range(8):
        status = run_job(http, work, f"free-{attempt}")
        assert status["endpoint"] == "mixed"
        assert status["model"] == ("scorer" if status["variant"] == "pos" else "scorer2")
        expected = {1.0} if status["variant"] == "pos" else {-1.0}
        assert signs(work / f"free-{attempt}" / "in.csv") == expected, status  # every row from one variant
        landed.add(status["variant"])
    assert landed == {"pos", "neg"}  # picked by weight, 50/50: one missing 8 times is 2 ** -7


def test_a_batch_job_may_force_its_variant(http, work):
    for _ in range(3):
        status = run_job(http, work, "forced", variant="neg", restart=True)
        assert status["variant"] == "neg"
        assert signs(work / "forced" / "in.csv") == {-1.0}


def test_bad_batch_jobs_on_an_endpoint_are_refused(http, work):
    body = {"model": "mixed", "input": str(work / "in.csv"), "output": str(work / "bad"), "mapping": {"x": "a,b,c"}}
    unknown = http.post("/v2/batch/jobs", json={**body, "variant": "zero"})
    assert unknown.status_code == 404
    assert "'pos', 'neg'" in unknown.text
    versioned = http.post("/v2/batch/jobs", json={**body, "version": "1"})
    assert versioned.status_code == 400
    assert "name a variant with 'variant'" in versioned.text
    on_a_model = http.post("/v2/batch/jobs", json={**body, "model": "scorer", "variant": "pos"})
    assert on_a_model.status_code == 400
    assert "is not one" in on_a_model.text


def wait_result(http: httpx.Client, job: httpx.Response) -> dict[str, object]:
    assert job.status_code == 202, job.text
    deadline = time.monotonic() + 30
    while http.get(f"/v2/jobs/{job.json()['id']}").json()["status"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    result: dict[str, object] = http.get(job.json()["result_url"]).json()
    return result


@pytest.mark.parametrize("header", ["x-inferd-variant", "X-Amzn-SageMaker-Target-Variant", "x-inferd-route-key"])
def test_an_async_job_refuses_routing_headers_and_takes_them_in_its_body(http, header):
    refused = http.post("/v2/models/mixed/infer-async", json=row(), headers={header: "neg"})
    assert refused.status_code == 400
    assert "inferd_variant" in refused.json()["error"]
    assert http.post("/v2/models/scorer/infer-async", json=row(), headers={header: "neg"}).status_code == 202
    for _ in range(5):
        forced = wait_result(http, http.post("/v2/models/mixed/infer-async",
                                             json={**row(), "parameters": {"inferd_variant": "neg"}}))
        assert forced["parameters"] == {"endpoint": "mixed", "variant": "neg"}
        assert forced["outputs"][0]["data"] == [-1.0, -2.0, -3.0]  # type: ignore[index]
