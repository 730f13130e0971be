"""``/docs`` and ``/openapi.json`` of a real ``inferd serve``: Swagger UI renders its route list in headless
Chromium with every address off loopback unreachable, and the document declares the request bodies the
routes read and no 422 that is never sent."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes import ADDER, write_model
from server_process import ServerProcess

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("docs")
    write_model(root / "models", "adder", ADDER)
    process = ServerProcess(root / "models", root / "serve.log", extra_args=["--grpc-port", "0"],
                            env={"AIP_PREDICT_ROUTE": "/vertex/predict", "AIP_HEALTH_ROUTE": "/vertex/health"})
    process.start()
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture(scope="module")
def schema(server: ServerProcess) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    return document


def body_types(schema: dict[str, Any], path: str, method: str = "post") -> set[str]:
    return set(schema["paths"][path][method].get("requestBody", {}).get("content", {}))


@pytest.mark.parametrize(("path", "types"), [
    ("/v2/models/{model}/infer", {"application/json", "application/octet-stream"}),
    ("/v2/models/{model}/infer-async", {"application/json", "application/octet-stream"}),
    ("/v2/models/{model}/versions/{version}/infer-async", {"application/json", "application/octet-stream"}),
    ("/v1/models/{model}:predict", {"application/json"}),
    ("/vertex/predict", {"application/json"}),
    ("/invocations", {"application/json", "text/csv", "application/jsonlines", "application/x-jsonlines"}),
    ("/v2/batch/jobs", {"application/json"}),
    ("/v2/repository/index", {"application/json"}),
])
def test_routes_declare_the_bodies_they_read(schema, path, types):
    assert body_types(schema, path) == types


@pytest.mark.parametrize("path", ["/v2/models/{model}/infer-async", "/v2/models/{model}/versions/{version}/infer-async"])
def test_infer_async_documents_the_headers_it_reads(schema, path):
    parameters = {p["name"]: p for p in schema["paths"][path]["post"]["parameters"]}
    assert {"model", "Inference-Id", "Inference-Id-From-Body", "Inference-Callback-Url",
            "Inference-Input-Location"} <= set(parameters)
    assert parameters["Inference-Id-From-Body"]["in"] == "header"
    assert "owner" in {p["name"] for p in schema["paths"]["/v2/jobs/{job_id}"]["get"]["parameters"]}


def test_the_batch_job_body_is_the_request_model(schema):
    body = schema["paths"]["/v2/batch/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["required"]) == {"model", "input", "output"}
    assert {"batch_size", "max_errors", "mapping", "restart"} <= set(body["properties"])


def test_no_route_documents_a_422(schema):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"], f"{method.upper()} {path}"


def test_a_parameter_fastapi_cannot_read_is_a_400_naming_it(server, schema):
    """``GET /v2/jobs`` has an integer ``limit``, which FastAPI converts: a bad one is a 400 in the V2 error form
    (not FastAPI's 422 ``detail``), and the document says so."""
    assert "400" in schema["paths"]["/v2/jobs"]["get"]["responses"]
    answer = httpx.get(f"{server.url}/v2/jobs?limit=many", timeout=10)
    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]
    assert "limit" in message
    assert "many" in message
    for path in ("/v2/models/%20/ready", "/v2/models/adder/versions/x/config", "/v2/jobs/none",
                 "/v1/models/nope", "/v2/batch/jobs/nope"):
        assert httpx.get(server.url + path, timeout=10).status_code in (200, 400, 404, 503), path


def test_docs_page_loads_its_assets_from_the_server(server):
    page = httpx.get(f"{server.url}/docs", timeout=10)
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets
    for asset in assets:
        assert asset.startswith("/"), f"/docs loads {asset} from elsewhere"
        assert httpx.get(server.url + asset, timeout=10).status_code == 200, asset


@pytest.mark.skipif(CHROMIUM is None and os.environ.get("CI") != "true",
                    reason="headless Chromium is not installed (apt-get install chromium; make test installs it as "
                           "root); under CI this fails instead")
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_render_with_the_network_closed(server, tmp_path: Path, page: str):
    """Every fetch off loopback goes to a proxy that is not there (port 9) and every name but 127.0.0.1
    fails to resolve: the page must render from what the server itself serves."""
    assert CHROMIUM is not None, "CI must have chromium: scripts/system_deps.sh (make test) installs it"
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               f"--user-data-dir={tmp_path / 'profile'}", "--proxy-server=127.0.0.1:9",
               "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--virtual-time-budget=20000",
               "--dump-dom", f"{server.url}{page}"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    for route in ("/v2/models/{model}/infer", "/v2/models/{model}/infer-async", "/v1/models/{model}:predict",
                  "/invocations", "/v2/batch/jobs", "/ping"):
        assert route in run.stdout, f"{page} rendered no {route}"
