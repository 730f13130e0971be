"""TLS on both ports of a real ``inferd serve``, with certificates made by openssl for the test: HTTPS through
the native inference route and the FastAPI routes, gRPC over TLS with tritonclient, plain connections refused,
and client certificates required when a client CA is set."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from fakes import ADDER, write_model
from raw_http import adder_grpc_inputs
from security_certs import Certs, make_certs
from server_process import ServerProcess

ADD = orjson.dumps({"inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]},
                               {"name": "b", "datatype": "FP32", "shape": [1, 3], "data": [10, 20, 30]}]})


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tls") / "models"
    write_model(root, "adder", ADDER)
    return root


def context(certs: Certs, client: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    """A client's TLS context trusting the test CA, presenting ``client`` (certificate, key) if given."""
    found = ssl.create_default_context(cafile=certs.ca)
    if client is not None:
        found.load_cert_chain(*client)
    return found


def _server(repo: Path, certs: Certs, name: str, client_ca: bool) -> Iterator[ServerProcess]:
    args = ["--tls-certfile", str(certs.server_cert), "--tls-keyfile", str(certs.server_key)]
    if client_ca:
        args += ["--tls-client-ca", str(certs.ca)]
    verify = context(certs, (certs.client_cert, certs.client_key) if client_ca else None)
    process = ServerProcess(repo, repo.parent / f"{name}.log", extra_args=args, scheme="https",
                            client_options={"verify": verify})
    yield from process.serving()


@pytest.fixture(scope="module")
def tls_server(repo: Path, certs: Certs) -> Iterator[ServerProcess]:
    yield from _server(repo, certs, "tls", client_ca=False)


@pytest.fixture(scope="module")
def mtls_server(repo: Path, certs: Certs) -> Iterator[ServerProcess]:
    yield from _server(repo, certs, "mtls", client_ca=True)


def test_https_fast_path_and_routes(tls_server, certs):
    assert tls_server.url.startswith("https://")
    with httpx.Client(base_url=tls_server.url, verify=context(certs)) as client:
        for _ in range(3):  # keep-alive over TLS through the native route
            answer = client.post("/v2/models/adder/infer", content=ADD)
            assert answer.status_code == 200, answer.text
            assert answer.json()["outputs"][0]["data"] == [11, 22, 33]
        assert client.get("/v2/models/adder").json()["name"] == "adder"
        assert client.post("/v1/models/adder:predict", json={"instances": [{"a": [1, 2, 3], "b": [1, 1, 1]}]}
                           ).status_code == 200


def test_https_by_host_name(tls_server, certs):
    answer = httpx.get(f"https://localhost:{tls_server.http_port}/v2/health/ready", verify=context(certs))
    assert answer.status_code == 200


def test_untrusted_certificate_is_rejected_by_the_client(tls_server):
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(tls_server.url + "/v2/health/live")


def test_plain_http_to_the_tls_port_fails(tls_server):
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{tls_server.http_port}/v2/health/live", timeout=5)


def test_grpc_over_tls(tls_server, certs):
    with grpcclient.InferenceServerClient(tls_server.grpc_url, ssl=True,
                                          root_certificates=str(certs.ca)) as client:
        assert client.is_server_ready()
        assert client.infer("adder", adder_grpc_inputs()).as_numpy("sum").tolist() == [[11, 22, 33]]


def test_plain_grpc_to_the_tls_port_fails(tls_server):
    with grpcclient.InferenceServerClient(tls_server.grpc_url) as client, \
            pytest.raises(InferenceServerException, match="UNAVAILABLE"):
        client.is_server_live(client_timeout=5)


def test_client_certificate_accepted(mtls_server, certs):
    with httpx.Client(base_url=mtls_server.url, verify=context(certs, (certs.client_cert, certs.client_key))) as client:
        answer = client.post("/v2/models/adder/infer", content=ADD)
        assert answer.status_code == 200, answer.text
    with grpcclient.InferenceServerClient(mtls_server.grpc_url, ssl=True, root_certificates=str(certs.ca),
                                          private_key=str(certs.client_key),
                                          certificate_chain=str(certs.client_cert)) as client:
        assert client.infer("adder", adder_grpc_inputs()).as_numpy("sum").tolist() == [[11, 22, 33]]


@pytest.mark.parametrize("who", ["nobody", "stranger"])
def test_client_without_a_trusted_certificate_is_refused(mtls_server, certs, who):
    cert = None if who == "nobody" else (certs.stranger_cert, certs.stranger_key)
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(mtls_server.url + "/v2/health/live", verify=context(certs, cert), timeout=5)
    options = {} if cert is None else {"private_key": str(cert[1]), "certificate_chain": str(cert[0])}
    with grpcclient.InferenceServerClient(mtls_server.grpc_url, ssl=True, root_certificates=str(certs.ca),
                                          **options) as client, \
            pytest.raises(InferenceServerException, match="UNAVAILABLE"):
        client.is_server_live(client_timeout=5)
