"""The platform protocols over real HTTP with httpx: KServe V1 and SageMaker against the session server,
then servers started the way Vertex AI and SageMaker start a custom container, their port and routes given
only through the platform's environment variables. Answers are checked against the models run directly."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import skops.io as sio
import xgboost

from cli_runner import BIN, cli_env
from fakes import ADDER, write_model
from server_process import ServerProcess, free_port

TARGET = "X-Amzn-SageMaker-Target-Model"
PLATFORM_VARIABLES = ("AIP_HTTP_PORT", "AIP_PREDICT_ROUTE", "AIP_HEALTH_ROUTE", "SAGEMAKER_BIND_TO_PORT",
                      "INFERD_DEFAULT_MODEL", "INFERD_HTTP_PORT")
PREDICT_ROUTE = "/v1/endpoints/123/deployedModels/456:predict"
HEALTH_ROUTE = "/health"
TRIP = [12.5, 8, 1, 0.7, 2]
SPAM_TEXT = "URGENT: verify your account now at http://login-secure.example.biz"
HAM_TEXT = "can we move the standup to Friday at 10:00? Thanks!"


# -- the models, run directly --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_reference(e2e_repo: Path):
    session = ort.InferenceSession(str(e2e_repo / "digits" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        label, proba = session.run(["label", "probabilities"], {"input": np.asarray(x, np.float32)})
        return label, proba

    return run


@pytest.fixture(scope="module")
def eta_reference(e2e_repo: Path):
    booster = xgboost.Booster(model_file=str(e2e_repo / "eta" / "1" / "model.json"))

    def run(rows: list[list[float]]) -> np.ndarray:
        prediction: np.ndarray = booster.inplace_predict(np.asarray(rows, np.float32), validate_features=False)
        return prediction.ravel()

    return run


@pytest.fixture(scope="module")
def spam_reference(e2e_repo: Path):
    model = sio.load(e2e_repo / "spam" / "1" / "model.skops")
    return model


@pytest.fixture
def http(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def assert_digit_predictions(predictions: list[dict], x: np.ndarray, reference) -> None:
    labels, probabilities = reference(x)
    assert len(predictions) == len(x)
    for prediction, label, proba in zip(predictions, labels, probabilities, strict=True):
        assert set(prediction) == {"label", "probabilities"}
        assert prediction["label"] == int(label)
        np.testing.assert_allclose(prediction["probabilities"], proba, rtol=1e-6)


def assert_digit_csv(text: str, x: np.ndarray, reference) -> None:
    """One line per row: the label, then the ten probabilities (the outputs in the signature's order)."""
    labels, probabilities = reference(x)
    lines = list(csv.reader(io.StringIO(text)))
    assert len(lines) == len(x)
    for line, label, proba in zip(lines, labels, probabilities, strict=True):
        assert len(line) == 11
        assert int(line[0]) == int(label)
        np.testing.assert_allclose([float(v) for v in line[1:]], proba, rtol=1e-6)


def csv_body(x: np.ndarray) -> str:
    return "".join(",".join(repr(float(v)) for v in row) + "\n" for row in x)


def still_serving(http: httpx.Client) -> None:
    response = http.post("/v1/models/eta:predict", json={"instances": [TRIP]})
    assert response.status_code == 200, response.text


# -- KServe V1 -----------------------------------------------------------------------------------------------
def test_v1_lists_models_and_readiness(http):
    listed = http.get("/v1/models")
    assert listed.status_code == 200
    assert {"digits", "spam", "eta", "ranker", "adder"} <= set(listed.json()["models"])
    response = http.get("/v1/models/digits")
    assert response.status_code == 200
    assert response.json() == {"name": "digits", "ready": True}


def test_v1_predict_digits_gives_one_object_per_row(http, digits, digits_reference):
    x = digits[0][:5]
    response = http.post("/v1/models/digits:predict", json={"instances": x.tolist()})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert_digit_predictions(response.json()["predictions"], x, digits_reference)
    assert [p["label"] for p in response.json()["predictions"]] == digits[1][:5].tolist()


def test_v1_predict_with_columns(http, digits, digits_reference):
    x = digits[0][10:12]
    response = http.post("/v1/models/digits:predict", json={"inputs": x.tolist()})
    assert response.status_code == 200, response.text
    assert_digit_predictions(response.json()["predictions"], x, digits_reference)


def test_v1_predict_text(http, spam_reference):
    texts = [SPAM_TEXT, HAM_TEXT]
    response = http.post("/v1/models/spam:predict", json={"instances": texts})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["label"] for p in predictions] == list(spam_reference.predict(texts))
    assert predictions[0]["label"] == "spam"
    np.testing.assert_allclose([p["probabilities"] for p in predictions], spam_reference.predict_proba(texts),
                               rtol=1e-5)


def test_v1_predict_eta_rows(http, eta_reference):
    rows = [TRIP, [7.5, 17, 0, 0.7, 1], [1.0, 3, 6, 0.1, 0]]
    response = http.post("/v1/models/eta:predict", json={"instances": rows})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert all(isinstance(p, float) for p in predictions)
    np.testing.assert_allclose(predictions, eta_reference(rows), rtol=1e-6)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("GET", "/v1/models/ghost", None, 404, "ghost"),
        ("POST", "/v1/models/ghost:predict", json.dumps({"instances": [TRIP]}), 404, "Request for unknown model: 'ghost' is not found"),
        ("POST", "/v1/models/digits:predict", json.dumps({"instances": [[0.0] * 32]}), 400,
         "input 'input': expected shape [-1, 64], got [1, 32]"),
        ("POST", "/v1/models/digits:predict", json.dumps({"instances": [[0.0] * 64, [0.0] * 63]}), 400,
         "input 'input': instance 1 has shape [63] but instance 0 has [64]"),
        ("POST", "/v1/models/digits:predict", "{not json", 400, "malformed JSON"),
        ("POST", "/v1/models/digits:predict", json.dumps({"rows": []}), 400, "'instances'"),
        ("POST", "/v1/models/digits:predict", json.dumps({"instances": []}), 400, "'instances' is empty"),
    ],
)
def test_v1_errors(http, method, path, body, status, message):
    response = http.request(method, path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    still_serving(http)


# -- SageMaker on the session server (many models: the target-model header names one) -----------------------
def test_sagemaker_ping(http):
    response = http.get("/ping")
    assert response.status_code == 200


@pytest.mark.parametrize("target", ["digits.tar.gz", "digits/model.tar.gz", "digits"])
def test_sagemaker_invocations_json(http, digits, digits_reference, target):
    x = digits[0][:3]
    response = http.post("/invocations", json={"instances": x.tolist()}, headers={TARGET: target})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert_digit_predictions(response.json()["predictions"], x, digits_reference)


def test_sagemaker_invocations_csv_in_csv_out(http, digits, digits_reference):
    x = digits[0][20:24]
    response = http.post("/invocations", content=csv_body(x),
                         headers={TARGET: "digits.tar.gz", "Content-Type": "text/csv", "Accept": "text/csv"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert_digit_csv(response.text, x, digits_reference)


def test_sagemaker_invocations_csv_in_json_out(http, digits, digits_reference):
    x = digits[0][30:32]
    response = http.post("/invocations", content=csv_body(x),
                         headers={TARGET: "digits.tar.gz", "Content-Type": "text/csv; charset=utf-8",
                                  "Accept": "application/json"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert_digit_predictions(response.json()["predictions"], x, digits_reference)


def test_sagemaker_invocations_json_lines(http, eta_reference):
    rows = [TRIP, [3.0, 12, 2, 0.4, 0]]
    body = "".join(json.dumps(row) + "\n" for row in rows)
    response = http.post("/invocations", content=body,
                         headers={TARGET: "eta.tar.gz", "Content-Type": "application/jsonlines",
                                  "Accept": "application/jsonlines"})
    assert response.status_code == 200, response.text
    predictions = [json.loads(line) for line in response.text.splitlines()]
    np.testing.assert_allclose(predictions, eta_reference(rows), rtol=1e-6)


def test_sagemaker_without_a_target_and_several_models(http):
    response = http.post("/invocations", json={"instances": [TRIP]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert TARGET in error
    assert "INFERD_DEFAULT_MODEL" in error
    still_serving(http)


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({"Content-Type": "application/x-protobuf"}, 415, "application/x-protobuf"),
        ({"Content-Type": "application/json", "Accept": "image/png"}, 406, "image/png"),
        ({TARGET: "ghost.tar.gz", "Content-Type": "application/json"}, 404, "ghost"),
    ],
)
def test_sagemaker_refusals(http, headers, status, message):
    response = http.post("/invocations", content=json.dumps({"instances": [TRIP]}),
                         headers={TARGET: "eta.tar.gz", **headers})
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    still_serving(http)


def test_sagemaker_csv_of_the_wrong_width(http):
    response = http.post("/invocations", content="1,2,3\n",
                         headers={TARGET: "digits.tar.gz", "Content-Type": "text/csv"})
    assert response.status_code == 400
    assert "'input'" in response.json()["error"]
    still_serving(http)


# -- containers started the way the platforms start them ------------------------------------------------------
class PlatformServer(ServerProcess):
    """``inferd serve`` without ``--http-port``: the port (and routes) come from the platform's variables only.
    Other platform variables of the test run's environment are left out, so only the ones given count."""

    def start(self, wait_ready: bool = True, timeout: float = 60) -> ServerProcess:
        command = [str(BIN / "inferd"), "serve", str(self.repository), "--host", "127.0.0.1",
                   "--grpc-port", str(self.grpc_port), *self.extra_args]
        env = {k: v for k, v in cli_env().items() if k not in PLATFORM_VARIABLES}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**env, **self.env})
        if wait_ready:
            self.wait(timeout=timeout)
        return self


@pytest.fixture(scope="module")
def platform_servers(e2e_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, PlatformServer]]:
    """A Vertex AI container serving ``eta`` (and ``adder``, which the predict route must not pick) and a
    single-model SageMaker container serving ``digits``, started side by side, stopped by pid at the end."""
    vertex_root = tmp_path_factory.mktemp("vertex")
    shutil.copytree(e2e_repo / "eta", vertex_root / "models" / "eta")
    write_model(vertex_root / "models", "adder", ADDER)  # a second model, so INFERD_DEFAULT_MODEL has to choose
    vertex_port = free_port()
    vertex_env = {"AIP_HTTP_PORT": str(vertex_port), "AIP_PREDICT_ROUTE": PREDICT_ROUTE,
                  "AIP_HEALTH_ROUTE": HEALTH_ROUTE, "INFERD_DEFAULT_MODEL": "eta"}
    sagemaker_root = tmp_path_factory.mktemp("sagemaker")
    shutil.copytree(e2e_repo / "digits", sagemaker_root / "models" / "digits")
    sagemaker_port = free_port()
    servers = {
        "vertex": PlatformServer(vertex_root / "models", vertex_root / "serve.log", env=vertex_env,
                                 http_port=vertex_port),
        "sagemaker": PlatformServer(sagemaker_root / "models", sagemaker_root / "serve.log",
                                    env={"SAGEMAKER_BIND_TO_PORT": str(sagemaker_port)}, http_port=sagemaker_port),
    }
    ready_paths = {"vertex": HEALTH_ROUTE, "sagemaker": "/ping"}
    try:
        for process in servers.values():
            process.start(wait_ready=False)
        for name, process in servers.items():
            process.wait(ready_paths[name], timeout=60)
        yield servers
    finally:
        codes = {name: process.stop() for name, process in servers.items()}
        for name, code in codes.items():
            assert code == 0, f"the {name} server exited with {code} on SIGTERM:\n{servers[name].log()}"


@pytest.fixture(scope="module")
def vertex(platform_servers: dict[str, PlatformServer]) -> PlatformServer:
    return platform_servers["vertex"]


@pytest.fixture(scope="module")
def sagemaker(platform_servers: dict[str, PlatformServer]) -> PlatformServer:
    return platform_servers["sagemaker"]


def test_vertex_health_and_predict_routes(vertex, eta_reference):
    with httpx.Client(base_url=vertex.url, timeout=30) as http:
        health = http.get(HEALTH_ROUTE)
        assert health.status_code == 200
        assert health.json() == {"ready": True}
        response = http.post(PREDICT_ROUTE, json={"instances": [TRIP]})
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"predictions"}
        (prediction,) = body["predictions"]
        assert isinstance(prediction, float)
        np.testing.assert_allclose(prediction, eta_reference([TRIP])[0], rtol=1e-6)
        assert 0 < prediction < 240  # minutes
        rows = [TRIP, [7.5, 17, 0, 0.7, 1]]
        many = http.post(PREDICT_ROUTE, json={"instances": rows}).json()["predictions"]
        np.testing.assert_allclose(many, eta_reference(rows), rtol=1e-6)


def test_vertex_predict_errors_and_the_other_protocols(vertex):
    with httpx.Client(base_url=vertex.url, timeout=30) as http:
        wrong = http.post(PREDICT_ROUTE, json={"instances": [[1.0, 2.0]]})
        assert wrong.status_code == 400
        assert "input 'input'" in wrong.json()["error"]
        assert http.post(PREDICT_ROUTE, content=b"{oops", headers={"Content-Type": "application/json"}).status_code == 400
        assert http.get("/v1/models").json() == {"models": ["adder", "eta"]}
        assert http.get("/v2/health/ready").status_code == 200
        assert http.post(PREDICT_ROUTE, json={"instances": [TRIP]}).status_code == 200


def test_sagemaker_container_with_one_model(sagemaker, digits, digits_reference):
    x = digits[0][40:43]
    with httpx.Client(base_url=sagemaker.url, timeout=30) as http:
        assert http.get("/ping").status_code == 200
        response = http.post("/invocations", content=csv_body(x), headers={"Content-Type": "text/csv", "Accept": "text/csv"})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/csv")
        assert_digit_csv(response.text, x, digits_reference)
        as_json = http.post("/invocations", json={"instances": x.tolist()})
        assert as_json.status_code == 200, as_json.text
        assert_digit_predictions(as_json.json()["predictions"], x, digits_reference)
        assert http.get("/v1/models").json() == {"models": ["digits"]}
