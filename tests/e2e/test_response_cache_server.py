"""The response cache, served by a real ``inferd serve``: a model that opts in (``[cache] enabled``) answers a
request whose inputs it has seen from the cache, whatever wire form, transport or request id it came with; two
models never share results; a model that does not opt in always runs; hits, misses and bytes held are in the
statistics and /metrics."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from demand_models import infer_body, write_counted
from server_process import ServerProcess

CACHED = "[cache]\nenabled = true\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("cache") / "models"
    write_counted(root, "cached", toml=CACHED)
    write_counted(root, "twin", toml=CACHED, factor=3)
    write_counted(root, "plain")
    process = ServerProcess(root, tmp_path_factory.mktemp("logs") / "serve.log",
                            extra_args=[])
    yield from process.serving()


def _stats(server: ServerProcess, name: str) -> dict[str, object]:
    found: dict[str, object] = httpx.get(server.url + f"/v2/models/{name}/stats").json()["model_stats"][0]
    return found


def _hits(server: ServerProcess, name: str) -> tuple[int, int, int]:
    stats = _stats(server, name)
    inference = stats["inference_stats"]
    assert isinstance(inference, dict)
    return inference["cache_hit"]["count"], inference["cache_miss"]["count"], int(str(stats["execution_count"]))


def test_a_repeated_request_is_answered_from_the_cache_whatever_its_wire_form_and_id(server):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    first = httpx.post(server.url + "/v2/models/cached/infer", json={**infer_body([1.0, 2.0]), "id": "one"})
    assert first.json()["outputs"][0]["data"] == [2.0, 4.0]
    assert _hits(server, "cached") == (0, 1, 1)
    again = httpx.post(server.url + "/v2/models/cached/infer", json={**infer_body([1.0, 2.0]), "id": "two"})
    assert again.json()["id"] == "two"
    assert again.json()["outputs"][0]["data"] == [2.0, 4.0]
    assert _hits(server, "cached") == (1, 1, 1)  # the model did not run again

    tensor = httpclient.InferInput("x", [2], "FP32")
    tensor.set_data_from_numpy(np.array([1.0, 2.0], dtype=np.float32), binary_data=True)
    with httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}") as http:
        binary = http.infer("cached", [tensor], request_id="three")
    assert binary.as_numpy("y").tolist() == [2.0, 4.0]
    grpc_tensor = grpcclient.InferInput("x", [2], "FP32")
    grpc_tensor.set_data_from_numpy(np.array([1.0, 2.0], dtype=np.float32))
    with grpcclient.InferenceServerClient(server.grpc_url) as grpc:
        by_grpc = grpc.infer("cached", [grpc_tensor])
    assert by_grpc.as_numpy("y").tolist() == [2.0, 4.0]
    assert _hits(server, "cached") == (3, 1, 1)

    other = httpx.post(server.url + "/v2/models/cached/infer", json=infer_body([1.0, 3.0]))
    assert other.json()["outputs"][0]["data"] == [2.0, 6.0]
    assert _hits(server, "cached") == (3, 2, 2)


def test_models_never_share_results_and_one_without_cache_always_runs(server):
    httpx.post(server.url + "/v2/models/cached/infer", json=infer_body([5.0]))
    twin = httpx.post(server.url + "/v2/models/twin/infer", json=infer_body([5.0]))
    assert twin.json()["outputs"][0]["data"] == [15.0]
    for _ in range(2):
        assert httpx.post(server.url + "/v2/models/plain/infer", json=infer_body([5.0])).status_code == 200
    assert _hits(server, "plain") == (0, 0, 2)


def test_failures_are_not_cached_and_the_metrics_show_hits_misses_and_bytes(server):
    bad = infer_body([1.0])
    bad["inputs"][0]["datatype"] = "INT64"  # type: ignore[index]
    for _ in range(2):
        assert httpx.post(server.url + "/v2/models/cached/infer", json=bad).status_code == 400
    metrics = httpx.get(server.url + "/metrics").text
    assert 'inferd_cache_hits_total{model="cached",version="1"}' in metrics
    assert 'inferd_cache_misses_total{model="cached",version="1"}' in metrics
    assert 'inferd_cache_bytes{model="cached"}' in metrics
    assert 'inferd_cache_hits_total{model="plain"' not in metrics
