"""inferd's DataPlane as Ray Serve replicas on a real local Ray: V2 REST through Serve's HTTP proxy, with httpx
and the stock ``tritonclient.http`` (binary tensors), compared with the in-process DataPlane."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from batch_models import FEATURES, feature_table, read_output, write_table
from fakes import ADDER, write_model
from inferd.dataplane import DataPlane
from inferd.inference import InferenceRequest, RequestInput
from inferd.repository import ModelRepository
from server_process import free_port

ray = pytest.importorskip("ray", reason="the ray extra is not installed")
serve = pytest.importorskip("ray.serve", reason="Ray Serve (the ray extra) is not installed")
httpclient = pytest.importorskip("tritonclient.http")

from inferd.integrations.ray_serve import inferd_app  # noqa: E402  (after the skips: it needs ray)

pytestmark = pytest.mark.slow  # as the other tests on a local Ray

TIMEOUT = 20.0
SCORER = """
import numpy as np

class Model:
    inputs = [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    outputs = [{"name": "score", "datatype": "FP64", "shape": [-1]}]

    def predict(self, inputs):
        return {"score": inputs["input"].astype(np.float64).sum(axis=1)}
"""
A = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=np.float32)
B = np.array([[0.5, 0.25, 0.125], [-1.0, -2.0, -3.0]], dtype=np.float32)


@dataclass
class Served:
    url: str
    repository: Path
    state: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("serve") / "models"
    write_model(root, "adder", ADDER, toml="[capture]\nenabled = true\nsample_percent = 100\n")
    write_model(root, "scorer", SCORER)
    port = free_port()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
        yield from _serve(root, port)


def _serve(root: Path, port: int) -> Iterator[Served]:
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = inferd_app(root, num_replicas=2, ray_actor_options={"num_cpus": 0.5},
                         settings={"state_dir": str(root.parent / "state")})
        serve.run(app, name="inferd", route_prefix="/", blocking=False)
        _wait_ready(f"http://127.0.0.1:{port}")
        yield Served(f"http://127.0.0.1:{port}", root, root.parent / "state")
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def _wait_ready(url: str) -> None:
    """Until the application answers ready (the replicas load the models first), at most 90 s."""
    end = time.monotonic() + 90
    while time.monotonic() < end:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the Serve application at {url} was not ready within 90 s")


def in_process(root: Path) -> dict[str, np.ndarray]:
    """The same inference on inferd's own DataPlane, in this process."""
    plane = DataPlane(ModelRepository(root))

    async def run() -> dict[str, np.ndarray]:
        await plane.start()
        request = InferenceRequest("adder", [RequestInput("a", "FP32", [2, 3], A), RequestInput("b", "FP32", [2, 3], B)])
        response = await plane.infer(request)
        return {o.name: np.asarray(o.data) for o in response.outputs}

    try:
        return asyncio.run(run())
    finally:
        plane.close()


@pytest.mark.timeout(120)
def test_ready_and_metadata_through_serve(served: Served) -> None:
    with httpx.Client(base_url=served.url, timeout=TIMEOUT) as client:
        assert client.get("/v2/health/live").json() == {"live": True}
        assert client.get("/v2/health/ready").json() == {"ready": True}
        assert client.get("/v2/models/adder/ready").status_code == 200
        meta = client.get("/v2/models/adder").json()
        assert meta["name"] == "adder"
        assert [i["name"] for i in meta["inputs"]] == ["a", "b"]
        assert [o["name"] for o in meta["outputs"]] == ["sum", "total"]
        assert "binary_tensor_data" in client.get("/v2").json()["extensions"]


@pytest.mark.timeout(120)
def test_json_infer_equals_the_in_process_dataplane(served: Served) -> None:
    expected = in_process(served.repository)
    body = {"inputs": [{"name": "a", "datatype": "FP32", "shape": [2, 3], "data": A.ravel().tolist()},
                       {"name": "b", "datatype": "FP32", "shape": [2, 3], "data": B.ravel().tolist()}]}
    reply = httpx.post(f"{served.url}/v2/models/adder/infer", json=body, timeout=TIMEOUT)
    assert reply.status_code == 200, reply.text
    outputs = {o["name"]: o for o in reply.json()["outputs"]}
    assert outputs["sum"]["shape"] == [2, 3]
    np.testing.assert_array_equal(np.array(outputs["sum"]["data"], dtype=np.float32).reshape(2, 3), expected["sum"])
    np.testing.assert_array_equal(np.array(outputs["total"]["data"]), expected["total"])


@pytest.mark.timeout(120)
def test_tritonclient_binary_infer_equals_the_in_process_dataplane(served: Served) -> None:
    expected = in_process(served.repository)
    client = httpclient.InferenceServerClient(served.url.removeprefix("http://"), network_timeout=TIMEOUT,
                                              connection_timeout=TIMEOUT)
    try:
        assert client.is_server_ready()
        inputs = [httpclient.InferInput("a", [2, 3], "FP32"), httpclient.InferInput("b", [2, 3], "FP32")]
        inputs[0].set_data_from_numpy(A, binary_data=True)
        inputs[1].set_data_from_numpy(B, binary_data=True)
        outputs = [httpclient.InferRequestedOutput(name, binary_data=True) for name in ("sum", "total")]
        result = client.infer("adder", inputs, outputs=outputs)
        np.testing.assert_array_equal(result.as_numpy("sum"), expected["sum"])
        np.testing.assert_array_equal(result.as_numpy("total"), expected["total"])
        assert result.as_numpy("total").dtype == np.float64
    finally:
        client.close()


@pytest.mark.timeout(120)
def test_bad_requests_get_the_v2_error_form_and_serving_goes_on(served: Served) -> None:
    with httpx.Client(base_url=served.url, timeout=TIMEOUT) as client:
        wrong = client.post("/v2/models/adder/infer", content=b'{"inputs": [{"name": "a"')
        assert (wrong.status_code, wrong.json()) == (
            400, {"error": "malformed JSON: unexpected end of data: line 1 column 25 (char 24)"})
        missing = client.post("/v2/models/adder/infer", json={"inputs": [
            {"name": "a", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]})
        assert (missing.status_code, missing.json()) == (400, {"error": "missing input 'b'; the model takes 'a', 'b'"})
        unknown = client.get("/v2/models/nope")
        assert unknown.status_code == 404
        assert set(unknown.json()) == {"error"}
        assert client.get("/v2/health/ready").status_code == 200


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("method", "path", "words"), [
    ("POST", "/v2/repository/models/adder/load", "deploy again"),
    ("POST", "/v2/batch/jobs", "job_store=postgresql"),
    ("GET", "/v2/endpoints", "endpoints are not served"),
    ("POST", "/v2/models/adder/infer-async", "job_store=postgresql"),
    ("GET", "/v2/jobs/abc", "job_store=postgresql"),
    ("POST", "/v2/systemsharedmemory/region/r/register", "shared memory"),
])
def test_what_serve_does_not_serve_is_a_clear_501(served: Served, method: str, path: str, words: str) -> None:
    reply = httpx.request(method, f"{served.url}{path}", json={}, timeout=TIMEOUT)
    assert reply.status_code == 501
    assert words in reply.json()["error"]
    assert httpx.get(f"{served.url}/v2/models/adder/ready", timeout=TIMEOUT).status_code == 200


@pytest.mark.timeout(120)
def test_both_replicas_answer_and_each_reports_its_own_statistics(served: Served) -> None:
    body = {"inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]},
                       {"name": "b", "datatype": "FP32", "shape": [1, 3], "data": [1, 1, 1]}]}
    seen: dict[str, int] = {}
    with httpx.Client(base_url=served.url, timeout=TIMEOUT) as client:
        for _ in range(60):
            reply = client.post("/v2/models/adder/infer", json=body)
            assert reply.status_code == 200
            assert reply.json()["outputs"][0]["data"] == [2.0, 3.0, 4.0]
            replica = reply.headers["inferd-replica"]
            seen[replica] = seen.get(replica, 0) + 1
            if len(seen) == 2 and min(seen.values()) >= 2:
                break
        assert len(seen) == 2, seen
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["inferd-replica"] in seen
        assert "inferd_request_success_total" in metrics.text
    # each replica captured what it answered, into a folder of its own
    end = time.monotonic() + 20
    while (captured := {r: _captured_lines(served.state / "capture" / f"replica-{r}") for r in seen}) and \
            any(captured[r] < n for r, n in seen.items()):
        assert time.monotonic() < end, (captured, seen)
        time.sleep(0.2)


def _captured_lines(folder: Path) -> int:
    return sum(len(path.read_bytes().splitlines()) for path in folder.glob("adder/1/**/*.jsonl"))


@pytest.mark.timeout(120)
def test_serve_run_with_the_app_builder_deploys_a_second_application(served: Served) -> None:
    """``serve run inferd.integrations.ray_serve:app_builder repository=...`` (the real command) against the same
    cluster, as a second application under a route prefix."""
    address = ray.get_runtime_context().gcs_address
    command = [str(Path(sys.executable).with_name("serve")), "run", "--address", address, "--non-blocking",
               "--name", "cli", "--route-prefix", "/cli", "inferd.integrations.ray_serve:app_builder",
               f"repository={served.repository}", "num_cpus=0.25", "max_batch_size=4", f"state_dir={served.state}"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=90, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        _wait_ready(f"{served.url}/cli")
        with httpx.Client(base_url=f"{served.url}/cli", timeout=TIMEOUT) as client:
            assert client.get("/v2/models/adder").json()["name"] == "adder"
            body = {"inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]},
                               {"name": "b", "datatype": "FP32", "shape": [1, 3], "data": [3, 2, 1]}]}
            assert client.post("/v2/models/adder/infer", json=body).json()["outputs"][1]["data"] == [12.0]
            assert client.get("/v2/jobs").status_code == 501  # the route below the prefix is what is refused
    finally:
        serve.delete("cli")


@pytest.mark.timeout(150)
def test_with_a_postgresql_job_store_async_and_batch_jobs_are_accepted_and_run(served: Served, postgres_dsn: str) -> None:
    """A second application whose two replicas share one PostgreSQL queue: jobs submitted through Serve are run
    once each (by whichever replica claims them) and their results read back through any replica; so is a batch
    job submitted over HTTP."""
    work = served.state.parent / "batch"
    source = write_table(feature_table(120), work / "in.csv")
    app = inferd_app(served.repository, num_replicas=2, ray_actor_options={"num_cpus": 0.25}, name="inferd-async",
                     settings={"job_store": postgres_dsn, "state_dir": str(served.state), "batch_roots": [str(work)]})
    serve.run(app, name="async", route_prefix="/async", blocking=False)
    try:
        _wait_ready(f"{served.url}/async")
        with httpx.Client(base_url=f"{served.url}/async", timeout=TIMEOUT) as client:
            ids = []
            for n in range(6):
                body = {"inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 3], "data": [n, n, n]},
                                   {"name": "b", "datatype": "FP32", "shape": [1, 3], "data": [1, 1, 1]}]}
                accepted = client.post("/v2/models/adder/infer-async", json=body)
                assert accepted.status_code == 202, accepted.text
                ids.append(accepted.json()["id"])
            for n, job in enumerate(ids):
                end = time.monotonic() + 60
                while (status := client.get(f"/v2/jobs/{job}").json()["status"]) not in ("succeeded", "failed"):
                    assert time.monotonic() < end, f"job {job} still {status}"
                    time.sleep(0.2)
                assert status == "succeeded"
                result = client.get(f"/v2/jobs/{job}/result").json()
                assert result["outputs"][1]["data"] == [3.0 * (n + 1)]
                assert client.get(f"/v2/jobs/{job}").json()["attempts"] == 1
            _batch_job_through_serve(client, source, work / "out")
    finally:
        serve.delete("async")


def _batch_job_through_serve(client: httpx.Client, source: Path, output: Path) -> None:
    """A batch job submitted over HTTP is stored in PostgreSQL and run by one of the replicas."""
    body = {"model": "scorer", "input": str(source), "output": str(output), "batch_size": 40, "key": "id",
            "mapping": {"input": ",".join(FEATURES)}}
    accepted = client.post("/v2/batch/jobs", json=body)
    assert accepted.status_code == 202, accepted.text
    end = time.monotonic() + 60
    while (status := client.get(f"/v2/batch/jobs/{accepted.json()['id']}").json())["state"] in ("queued", "running"):
        assert time.monotonic() < end, status
        time.sleep(0.2)
    assert status["state"] == "succeeded", status
    assert status["summary"]["rows_out"] == 120
    out = read_output(output / "in.csv")
    assert out.column("id").to_pylist() == list(range(1000, 1120))
    table = feature_table(120)
    expected = np.stack([table.column(f).to_numpy() for f in FEATURES], axis=1).astype(np.float32).sum(axis=1)
    np.testing.assert_allclose(out.column("score").to_numpy(), expected, rtol=1e-5)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("method", "path", "words"), [
    ("GET", "/v2/models/adder/config", '"name":"adder"'),
    ("GET", "/v2/models/adder/stats", '"model_stats"'),
    ("POST", "/v2/repository/index", '"state":"READY"'),
    ("GET", "/v1/models/adder", '"ready":true'),
    ("GET", "/ping", ""),
    ("GET", "/openai/v1/models", '"object":"list"'),
    ("GET", "/docs", "swagger"),
])
def test_the_other_protocols_are_served_through_serve(served: Served, method: str, path: str, words: str) -> None:
    reply = httpx.request(method, f"{served.url}{path}", timeout=TIMEOUT)
    assert reply.status_code == 200, reply.text
    assert words in reply.text.replace(" ", "")


@pytest.mark.timeout(120)
def test_server_sent_events_pass_through_the_proxy(served: Served) -> None:
    with httpx.stream("POST", f"{served.url}/v2/models/adder/generate_stream", json={"a": [1, 2, 3], "b": [1, 1, 1]},
                      timeout=TIMEOUT) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = [line for line in reply.iter_lines() if line.startswith("data: ")]
    assert events == ['data: {"model_name":"adder","model_version":"1","sum":[2.0,3.0,4.0],"total":9.0}']
