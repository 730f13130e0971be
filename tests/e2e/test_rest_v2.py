"""V2 over REST against the running server with plain httpx: the protocol's JSON shapes, the binary
extension's edge cases and every error status, and that the server keeps serving after each."""

from __future__ import annotations

import json
import struct

import httpx
import numpy as np
import pytest

ROW = [0.0] * 64
DIGITS = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": ROW}]}


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def still_serving(http: httpx.Client) -> None:
    response = http.post("/v2/models/digits/infer", json=DIGITS)
    assert response.status_code == 200, response.text


def test_health_and_server_metadata(http):
    assert http.get("/v2/health/live").json() == {"live": True}
    assert http.get("/v2/health/ready").json() == {"ready": True}
    meta = http.get("/v2").json()
    assert meta["name"] == "inferd"
    assert {"binary_tensor_data", "model_repository", "model_configuration", "statistics"} <= set(meta["extensions"])


def test_infer_json_echoes_id_and_has_no_output_parameters(http):
    body = {**DIGITS, "id": "abc", "outputs": [{"name": "label"}]}
    response = http.post("/v2/models/digits/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    payload = response.json()
    assert payload["id"] == "abc"
    assert payload["model_name"] == "digits"
    assert payload["model_version"] == "1"
    (output,) = payload["outputs"]
    assert set(output) == {"name", "datatype", "shape", "data"}
    assert (output["name"], output["datatype"], output["shape"]) == ("label", "INT64", [1])


def test_the_plain_form_and_the_general_path_answer_alike(http):
    """A request in the plain form is read and answered in one pass; with an empty ``parameters`` object (which says
    nothing) it takes the general path. Both answers are the same bytes, and both count in the statistics."""
    before = http.get("/v2/models/digits/stats").json()["model_stats"][0]["inference_stats"]["success"]["count"]
    plain = {**DIGITS, "id": "p", "outputs": [{"name": "probabilities"}, {"name": "label"}]}
    fast = http.post("/v2/models/digits/infer", json=plain)
    general = http.post("/v2/models/digits/infer", json={**plain, "parameters": {}})
    assert fast.status_code == general.status_code == 200
    assert fast.content == general.content
    assert [o["name"] for o in fast.json()["outputs"]] == ["probabilities", "label"]
    after = http.get("/v2/models/digits/stats").json()["model_stats"][0]["inference_stats"]["success"]["count"]
    assert after == before + 2


def test_binary_requests_in_the_plain_form_and_through_the_general_path_answer_alike(http):
    """tritonclient's form: inputs as binary data, outputs asked for as binary data. A ``timeout`` parameter (which
    does not change the answer) sends the same request the general way: the same bytes come back."""
    raw = np.arange(64, dtype="<f4").tobytes()
    header = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "parameters": {"binary_data_size": 256}}],
              "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}, {"name": "label"}]}
    answers = []
    for extra in ({}, {"parameters": {"timeout": 10_000_000}}):
        head = json.dumps({**header, **extra}).encode()
        response = http.post("/v2/models/digits/infer", content=head + raw,
                             headers={"Inference-Header-Content-Length": str(len(head))})
        assert response.status_code == 200, response.text
        answers.append((response.headers["inference-header-content-length"], response.content))
    assert answers[0] == answers[1]
    length = int(answers[0][0])
    outputs = json.loads(answers[0][1][:length])["outputs"]
    assert outputs[0]["parameters"] == {"binary_data_size": 40}
    assert outputs[1]["data"] == [int(np.argmax(np.frombuffer(answers[0][1][length:], dtype="<f4")))]


def test_nested_data_is_accepted(http):
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 64], "data": [ROW, ROW]}]}
    assert http.post("/v2/models/digits/versions/1/infer", json=body).json()["outputs"][0]["shape"] == [2]


def test_model_config_in_tritons_form(http):
    config = http.get("/v2/models/digits/config").json()
    assert config["max_batch_size"] > 0
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [64], "format": "FORMAT_NONE",
                                "is_shape_tensor": False, "allow_ragged_batch": False, "optional": False}]
    assert {"name": "probabilities", "data_type": "TYPE_FP32", "dims": [10], "is_shape_tensor": False} \
        in config["output"]
    # an ONNX model without model.toml batches what arrives together, as Triton configures ONNX models itself
    assert config["dynamic_batching"] == {"preferred_batch_size": [], "max_queue_delay_microseconds": 0,
                                          "priority_levels": 1, "default_priority_level": 1}
    assert "dynamic_batching" not in http.get("/v2/models/spam/config").json()  # scikit-learn: not by default


def test_statistics(http):
    still_serving(http)
    stats = http.get("/v2/models/digits/stats").json()["model_stats"]
    assert stats[0]["name"] == "digits"
    assert stats[0]["inference_stats"]["success"]["count"] >= 1
    everything = http.get("/v2/models/stats").json()["model_stats"]
    assert {"digits", "spam", "eta", "ranker"} <= {s["name"] for s in everything}


def test_repository_index_load_unload(http):
    index = http.post("/v2/repository/index", json={}).json()
    assert {"name": "scratch", "version": "1", "state": "READY", "reason": ""} in index
    assert http.post("/v2/repository/models/scratch/unload").status_code == 200
    assert http.get("/v2/models/scratch/ready").status_code == 503
    ready = http.post("/v2/repository/index", json={"ready": True}).json()
    assert "scratch" not in {e["name"] for e in ready}
    adder = {"inputs": [{"name": n, "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]} for n in ("a", "b")]}
    response = http.post("/v2/models/scratch/infer", json=adder)
    assert response.status_code == 503
    assert "model 'scratch' is not ready" in response.json()["error"]
    assert http.post("/v2/repository/models/scratch/load").status_code == 200
    assert http.get("/v2/models/scratch/ready").json() == {"name": "scratch", "ready": True}
    missing = http.post("/v2/repository/models/nothing-here/load")
    assert missing.status_code == 404
    assert "nothing-here" in missing.json()["error"]


def binary_body(header: dict, tail: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + tail, {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}


def bytes_input(shape: list[int], size: int) -> dict:
    return {"inputs": [{"name": "x", "datatype": "BYTES", "shape": shape, "parameters": {"binary_data_size": size}}]}


def test_binary_request_and_response(http):
    x = np.arange(64, dtype=np.float32).reshape(1, 64)
    header = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64],
                          "parameters": {"binary_data_size": x.nbytes}}],
              "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}
    body, headers = binary_body(header, x.tobytes())
    response = http.post("/v2/models/digits/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    meta = json.loads(response.content[:length])
    (output,) = meta["outputs"]
    assert output["parameters"] == {"binary_data_size": 40}
    assert np.frombuffer(response.content[length:], dtype="<f4").shape == (10,)


@pytest.mark.parametrize(
    ("content", "headers", "status", "message"),
    [
        (b"{not json", {}, 400, "malformed JSON"),
        (b'{"inputs": 3}', {}, 400, "non-empty 'inputs' list"),
        (b"{}", {"Inference-Header-Content-Length": "99"}, 400, "99"),
        (b"{}", {"Inference-Header-Content-Length": "many"}, 400, "Inference-Header-Content-Length"),
    ],
)
def test_malformed_bodies(http, content, headers, status, message):
    response = http.post("/v2/models/digits/infer", content=content, headers=headers)
    assert response.status_code == status
    assert message in response.json()["error"]
    still_serving(http)


def test_binary_header_length_that_cuts_the_json(http):
    body, headers = binary_body(DIGITS, b"")
    headers["Inference-Header-Content-Length"] = str(len(body) - 5)
    response = http.post("/v2/models/digits/infer", content=body, headers=headers)
    assert response.status_code == 400
    assert "malformed JSON" in response.json()["error"]
    still_serving(http)


def test_truncated_tensor_data(http):
    header = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "parameters": {"binary_data_size": 256}}]}
    body, headers = binary_body(header, b"\x00" * 100)
    response = http.post("/v2/models/digits/infer", content=body, headers=headers)
    assert response.status_code == 400
    assert "input" in response.json()["error"]
    still_serving(http)


def test_bytes_length_prefix_past_the_end(http):
    tail = struct.pack("<I", 1000) + b"short"
    body, headers = binary_body(bytes_input([1, 1], len(tail)), tail)
    response = http.post("/v2/models/echo_bytes/infer", content=body, headers=headers)
    assert response.status_code == 400
    assert "BYTES element 0 says 1000 bytes but only 5 remain" in response.json()["error"]
    still_serving(http)


def test_null_in_the_data_is_refused_not_made_nan(http):
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [None, *ROW[1:]]}]}
    response = http.post("/v2/models/digits/infer", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "input 'input': the data holds null; FP32 needs numbers"
    still_serving(http)


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "0.5"])
@pytest.mark.parametrize("general", [False, True], ids=["plain form", "general path"])
def test_strings_in_numeric_data_are_refused_naming_the_input(http, text, general):
    """numpy reads these strings as numbers; JSON data of a numeric input must be numbers, on both decoders."""
    item = {"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [*ROW[:10], text, *ROW[11:]]}
    if general:
        item["parameters"] = {"note": "an input parameter: not the plain form"}
    response = http.post("/v2/models/digits/infer", json={"inputs": [item]})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == f"input 'input': FP32 data must be JSON numbers, got the string {text!r}"
    still_serving(http)


def test_fp16_in_json_is_refused_clearly(http):
    body = {"inputs": [{"name": "x", "datatype": "FP16", "shape": [1, 1], "data": [1.0]}]}
    response = http.post("/v2/models/echo_fp16/infer", json=body)
    assert response.status_code == 400
    assert "FP16" in response.json()["error"]


def test_status_codes(http, server):
    assert http.get("/v2/models/ghost").status_code == 404
    assert http.get("/v2/models/ghost/ready").status_code == 404
    assert http.get("/v2/models/digits/versions/9").status_code == 404
    response = http.post("/v2/models/ghost/infer", json=DIGITS)
    assert response.status_code == 404
    assert response.json()["error"].startswith("Request for unknown model: 'ghost' is not found; served models: ")
    assert http.get("/v2/no/such/route").json()["error"]
    failing = http.post("/v2/models/failing/infer", json={"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [-3]}]})
    assert failing.status_code == 500
    assert "negative values are not allowed" in failing.json()["error"]
    still_serving(http)


def test_oversized_body_is_413(http):
    big = b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [' + b"0," * (3 * 1024 * 1024) + b"0]}]}"
    response = http.post("/v2/models/digits/infer", content=big)
    assert response.status_code == 413
    assert "over the limit" in response.json()["error"]
    still_serving(http)


def test_openapi_docs_are_served(http):
    schema = http.get("/openapi.json").json()
    assert "/v2/models/{model}/infer" in schema["paths"]
    assert http.get("/docs").status_code == 200


def test_probes_answer_before_and_after_the_full_app_is_built(server):
    """The health probes are native routes; every other route still reaches the full app."""
    for path in ("/v2/health/live", "/v2/health/ready", "/v2", "/v2/models/digits", "/ping", "/v1/models/digits"):
        assert httpx.get(server.url + path, timeout=10).status_code == 200, path
