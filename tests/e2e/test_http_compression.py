"""Compressed HTTP bodies against a real server: ``tritonclient.http``'s request and response compression (gzip and
deflate, binary data and JSON), and with raw httpx every route that reads a body: compressed bodies inflated, a
zip bomb refused with 413 naming the limit, an unknown coding 415 naming the supported ones, and corrupt data 400."""

from __future__ import annotations

import gzip
import json
import shutil
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient

from server_process import ServerProcess

LIMIT = 1024 * 1024
ROUTES = {
    "v2 native": "/v2/models/digits/infer",
    "v2 fastapi": "/v2/models/dig%69ts/infer",  # percent-encoded: the FastAPI route answers it
    "v1": "/v1/models/digits:predict",
    "sagemaker": "/invocations",
    "async": "/v2/models/digits/infer-async",
}
COMPRESS = {"gzip": gzip.compress, "deflate": zlib.compress}


@pytest.fixture(scope="module")
def compression_server(e2e_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("compression") / "models"
    shutil.copytree(e2e_repo / "digits", root / "digits")
    process = ServerProcess(root, tmp_path_factory.mktemp("compression-logs") / "serve.log",
                            extra_args=["--max-body-bytes", str(LIMIT)],
                            env={"INFERD_ASYNC_MAX_BODY_BYTES": str(LIMIT)})
    process.start(timeout=120)
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture(scope="module")
def rows(e2e_repo: Path, digits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = digits[0][:5]
    session = ort.InferenceSession(str(e2e_repo / "digits" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    label, probabilities = session.run(["label", "probabilities"], {"input": x})
    return x, label, probabilities


@pytest.fixture
def http(compression_server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=compression_server.url, timeout=30) as client:
        yield client


def body_for(route: str, x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """A request of ``x`` in the form the route reads."""
    if route in ("v1",):
        return json.dumps({"instances": x.tolist()}).encode(), {}
    if route == "sagemaker":
        return json.dumps({"instances": x.tolist()}).encode(), {"content-type": "application/json",
                                                                  "x-amzn-sagemaker-target-model": "digits"}
    v2 = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    return json.dumps(v2).encode(), {"content-type": "application/json"}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize(("request_coding", "response_coding"), [
    ("gzip", None), ("deflate", None), (None, "gzip"), (None, "deflate"), ("gzip", "deflate"), ("deflate", "gzip"),
])
def test_tritonclient_http_compression(compression_server, rows, binary, request_coding, response_coding):
    x, label, probabilities = rows
    client = httpclient.InferenceServerClient(compression_server.url.removeprefix("http://"))
    try:
        item = httpclient.InferInput("input", list(x.shape), "FP32")
        item.set_data_from_numpy(x, binary_data=binary)
        outputs = [httpclient.InferRequestedOutput(name, binary_data=binary) for name in ("label", "probabilities")]
        result = client.infer("digits", [item], outputs=outputs, request_compression_algorithm=request_coding,
                              response_compression_algorithm=response_coding)
    finally:
        client.close()
    np.testing.assert_array_equal(result.as_numpy("label"), label)
    np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, rtol=1e-6)


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_large_bodies_inflate_and_compress_in_a_thread_with_the_same_answers(compression_server, e2e_repo, coding):
    """Over 256 KiB compressed in and out (random pixels compress badly), so both go through a thread."""
    x = np.random.default_rng(7).random((3000, 64), dtype=np.float32) * 16
    session = ort.InferenceSession(str(e2e_repo / "digits" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {"input": x})
    client = httpclient.InferenceServerClient(compression_server.url.removeprefix("http://"))
    try:
        item = httpclient.InferInput("input", list(x.shape), "FP32")
        item.set_data_from_numpy(x)
        assert len(COMPRESS[coding](x.tobytes())) > 256 * 1024
        result = client.infer("digits", [item], outputs=[httpclient.InferRequestedOutput("probabilities",
                                                                                         binary_data=False)],
                              request_compression_algorithm=coding, response_compression_algorithm=coding)
    finally:
        client.close()
    assert len(json.dumps(result.get_response())) > 256 * 1024
    np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, rtol=1e-6)


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_a_response_is_compressed_only_when_asked_for(http, rows, coding):
    x = rows[0]
    body, headers = body_for("v2 native", x)
    for path in (ROUTES["v2 native"], ROUTES["v2 fastapi"]):
        with http.stream("POST", path, content=body, headers={**headers, "accept-encoding": coding}) as response:
            raw = b"".join(response.iter_raw())
        assert response.status_code == 200
        assert response.headers["content-encoding"] == coding
        assert response.headers["vary"] == "accept-encoding"
        assert int(response.headers["content-length"]) == len(raw)
        inflated = gzip.decompress(raw) if coding == "gzip" else zlib.decompress(raw)
        assert json.loads(inflated)["outputs"][0]["data"] == rows[1].tolist()
        plain = http.post(path, content=body, headers={**headers, "accept-encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert plain.content == inflated
    # an error is never compressed, whatever the client accepts
    refused = http.post(ROUTES["v2 native"], content=b"{}", headers={"accept-encoding": coding})
    assert refused.status_code == 400
    assert "content-encoding" not in refused.headers


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
@pytest.mark.parametrize("route", list(ROUTES))
def test_every_route_reads_a_compressed_body(http, rows, route, coding):
    x, label, _ = rows
    body, headers = body_for(route, x)
    response = http.post(ROUTES[route], content=COMPRESS[coding](body), headers={**headers, "content-encoding": coding})
    assert response.status_code in (200, 202), response.text
    if route == "async":
        response = wait_for_result(http, response.json()["result_url"])
    answer = response.json()
    got = answer["predictions"] if route in ("v1", "sagemaker") else answer["outputs"][0]["data"]
    if route in ("v1", "sagemaker"):
        got = [prediction["label"] for prediction in got]
    assert got == label.tolist()


def wait_for_result(http: httpx.Client, url: str) -> httpx.Response:
    for _ in range(600):
        response = http.get(url)
        if response.status_code != 409:
            assert response.status_code == 200, response.text
            return response
        time.sleep(0.05)
    raise AssertionError(f"no result at {url}")


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    """64 MiB of zeros in 64 KiB (inflated on the event loop) and 512 MiB in 500 KiB (in a thread): both under the
    limit as sent."""
    zeros = zlib.compressobj(9, zlib.DEFLATED, 31)
    small = zeros.compress(b"\0" * (64 * LIMIT)) + zeros.flush()
    return {"small": small, "large": gzip.compress(b"\0" * (512 * LIMIT))}


@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("route", list(ROUTES))
def test_a_zip_bomb_is_refused_with_413_naming_the_limit(http, bombs, route, size):
    bomb = bombs[size]
    assert (len(bomb) > 256 * 1024) == (size == "large")
    assert len(bomb) < LIMIT
    _, headers = body_for(route, np.zeros((1, 64), dtype=np.float32))
    response = http.post(ROUTES[route], content=bomb, headers={**headers, "content-encoding": "gzip"})
    assert response.status_code == 413, response.text
    setting = "async_max_body_bytes" if route == "async" else "max_body_bytes"
    assert response.json()["error"] == (f"request body is over the limit of {LIMIT} bytes once inflated from gzip "
                                        f"({setting})")
    still = http.post(ROUTES["v2 native"], content=body_for("v2 native", np.zeros((1, 64), dtype=np.float32))[0])
    assert still.status_code == 200


@pytest.mark.parametrize("route", list(ROUTES))
def test_an_unknown_coding_is_415_naming_the_supported_ones_and_corrupt_data_is_400(http, rows, route):
    body, headers = body_for(route, rows[0])
    response = http.post(ROUTES[route], content=body, headers={**headers, "content-encoding": "br"})
    assert response.status_code == 415, response.text
    assert response.json()["error"] == ("Content-Encoding 'br' is not supported: send the body as gzip or deflate, "
                                        "or uncompressed (identity)")
    assert response.headers["accept-encoding"] == "gzip, deflate"
    corrupt = http.post(ROUTES[route], content=gzip.compress(body)[:-8], headers={**headers, "content-encoding": "gzip"})
    assert corrupt.status_code == 400, corrupt.text
    assert corrupt.json()["error"] == "the request body is not valid gzip data (it stops before its end)"
    identity = http.post(ROUTES[route], content=body, headers={**headers, "content-encoding": "identity"})
    assert identity.status_code in (200, 202), identity.text
