"""API keys with scopes against a real ``inferd serve``: HTTP (the native inference route, pipelined requests
and the FastAPI routes behind the one ASGI wrapper) and gRPC (tritonclient and the raw stub), and the rule
that refuses to start off loopback without keys."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import orjson
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from cli_runner import BIN, cli_env, inferd
from fakes import ADDER, write_model
from inferd.security.keys import hash_key
from inferd.server.grpc.generated import grpc_service_pb2 as pb
from inferd.server.grpc.generated import grpc_service_pb2_grpc as pb_grpc
from raw_http import adder_grpc_inputs, post, read_responses
from server_process import ServerProcess

KEYS = {"runner": "k-infer-0123456789abcdefghijklmnopqrstuv", "reader": "k-read-0123456789abcdefghijklmnopqrstuvw",
        "boss": "k-admin-0123456789abcdefghijklmnopqrstu"}
ENV_KEY = "k-env-0123456789abcdefghijklmnopqrstuvwxyz"
ADD = orjson.dumps({"inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]},
                               {"name": "b", "datatype": "FP32", "shape": [1, 3], "data": [10, 20, 30]}]})


def bearer(name: str) -> dict[str, str]:
    return {"authorization": f"Bearer {KEYS[name]}"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("auth") / "models"
    write_model(root, "adder", ADDER)
    write_model(root, "spare", ADDER)
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerProcess]:
    keys_file = repo.parent / "keys.toml"
    scopes = {"runner": ["infer"], "reader": ["read"], "boss": ["admin"]}
    keys_file.write_text("".join(
        f'[[keys]]\nname = "{n}"\nsha256 = "{hash_key(k)}"\nscopes = {json.dumps(scopes[n])}\n\n'
        for n, k in KEYS.items()))
    env_keys = json.dumps([{"name": "from-env", "sha256": hash_key(ENV_KEY), "scopes": ["infer", "read"]}])
    process = ServerProcess(repo, repo.parent / "serve.log", extra_args=["--api-keys-file", str(keys_file)],
                            env={"INFERD_API_KEYS": env_keys})
    yield from process.serving()
    for key in [*KEYS.values(), ENV_KEY]:
        assert key not in process.log()


def test_probes_stay_open(server):
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/adder/ready", "/v1/models/adder"):
        assert httpx.get(server.url + path).status_code == 200, path


def test_infer_without_key_is_401_with_a_challenge(server):
    answer = httpx.post(server.url + "/v2/models/adder/infer", content=ADD)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.json() == {"error": "missing API key: send Authorization: Bearer <key> or x-api-key"}


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v2/models/adder/infer"), ("POST", "/v2/models/add%65r/infer"), ("POST", "/v2/models/adder/infer-async"),
    ("POST", "/v1/models/adder:predict"), ("POST", "/invocations"), ("GET", "/v2/models/adder"),
    ("POST", "/v2/repository/index"), ("GET", "/v2/batch/jobs"), ("GET", "/metrics"), ("GET", "/v2/jobs"),
])
def test_every_401_carries_the_challenge_whichever_route_answers(server, method, path):
    answer = httpx.request(method, server.url + path, content=ADD)
    assert answer.status_code == 401, path
    assert answer.headers["www-authenticate"] == "Bearer", path
    assert "missing API key" in answer.json()["error"]


def test_wrong_key_is_401_and_not_echoed(server):
    answer = httpx.post(server.url + "/v2/models/adder/infer", content=ADD,
                        headers={"authorization": "Bearer not-a-real-key-123"})
    assert answer.status_code == 401
    assert answer.json() == {"error": "invalid API key"}
    assert "not-a-real-key" not in answer.text


@pytest.mark.parametrize("headers", [bearer("runner"), {"x-api-key": KEYS["runner"]},
                                     {"authorization": f"bearer {KEYS['boss']}"}, {"x-api-key": ENV_KEY}])
def test_infer_with_a_key_that_has_the_scope(server, headers):
    answer = httpx.post(server.url + "/v2/models/adder/infer", content=ADD, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == [11, 22, 33]


def test_key_without_the_scope_is_403_naming_key_scope_and_call(server):
    answer = httpx.post(server.url + "/v2/models/adder/infer", content=ADD, headers=bearer("reader"))
    assert answer.status_code == 403
    assert answer.json() == {"error": "API key 'reader' lacks scope 'infer' needed for POST /v2/models/adder/infer"}
    load = httpx.post(server.url + "/v2/repository/models/spare/load", headers=bearer("runner"))
    assert load.status_code == 403
    assert load.json()["error"] == ("API key 'runner' lacks scope 'admin' needed for "
                                    "POST /v2/repository/models/spare/load")


@pytest.mark.parametrize(("method", "path", "needs"), [
    ("GET", "/v2", "read"),
    ("GET", "/v2/models/adder", "read"),
    ("GET", "/v2/models/adder/config", "read"),
    ("GET", "/v2/models/stats", "read"),
    ("POST", "/v2/repository/index", "read"),
    ("GET", "/v1/models", "read"),
    ("GET", "/openapi.json", "read"),
    ("GET", "/v2/jobs", "infer"),
    ("GET", "/no/such/route", "read"),
    ("POST", "/v1/models/adder:predict", "infer"),
    ("POST", "/invocations", "infer"),
    ("GET", "/v2/batch/jobs", "admin"),
    ("POST", "/v2/repository/models/spare/unload", "admin"),
])
def test_route_scopes(server, method, path, needs):
    """Each route: 401 without a key, 403 with a key lacking the scope, anything else with one that has it."""
    holder = {"infer": "runner", "read": "reader", "admin": "boss"}[needs]
    other = "reader" if needs != "read" else "runner"
    with httpx.Client(base_url=server.url) as client:
        assert client.request(method, path).status_code == 401
        denied = client.request(method, path, headers=bearer(other))
        assert denied.status_code == 403
        assert f"lacks scope '{needs}'" in denied.json()["error"]
        allowed = client.request(method, path, headers=bearer(holder))
        assert allowed.status_code not in (401, 403), allowed.text


def test_admin_loads_and_unloads(server):
    with httpx.Client(base_url=server.url, headers=bearer("boss")) as client:
        assert client.post("/v2/repository/models/spare/load").status_code == 200
        assert client.post("/v2/repository/models/spare/unload").status_code == 200
        assert client.post("/v2/repository/models/spare/load").status_code == 200
        assert client.get("/v2/models/spare").status_code == 200  # admin holds read too


def wait_result(server: ServerProcess, job_id: str, headers: dict[str, str]) -> httpx.Response:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        result = httpx.get(server.url + f"/v2/jobs/{job_id}/result", headers=headers)
        if result.status_code != 409:
            return result
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {result.text}")


def test_async_jobs_belong_to_the_key_that_submitted_them(server):
    """Job ids are per key: two keys using the same Inference-Id both get 202 and their own results; another
    key's job does not exist for a key (404 on status, result and cancel, absent from its list, never 403); an
    admin key sees both and picks one with ?owner=; the CLI goes through the same routes."""
    env_key = {"x-api-key": ENV_KEY}
    other = orjson.dumps({"inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 3], "data": [5, 5, 5]},
                                     {"name": "b", "datatype": "FP32", "shape": [1, 3], "data": [1, 1, 1]}]})
    submitted = httpx.post(server.url + "/v2/models/adder/infer-async", content=ADD,
                           headers={**bearer("runner"), "inference-id": "auth-job-1"})
    assert submitted.status_code == 202, submitted.text
    assert httpx.post(server.url + "/v2/models/adder/infer-async", content=ADD).status_code == 401
    second = httpx.post(server.url + "/v2/models/adder/infer-async", content=other,
                        headers={**env_key, "inference-id": "auth-job-1"})
    assert second.status_code == 202, second.text  # not a 409: the id is free for this key
    assert submitted.json()["id"] == second.json()["id"] == "auth-job-1"
    again = httpx.post(server.url + "/v2/models/adder/infer-async", content=ADD,
                       headers={**bearer("runner"), "inference-id": "auth-job-1"})
    assert again.status_code == 200  # the same key's idempotent retry
    assert wait_result(server, "auth-job-1", bearer("runner")).json()["outputs"][0]["data"] == [11, 22, 33]
    assert wait_result(server, "auth-job-1", env_key).json()["outputs"][0]["data"] == [6, 6, 6]

    only_runner = httpx.post(server.url + "/v2/models/adder/infer-async", content=ADD,
                             headers={**bearer("runner"), "inference-id": "auth-job-2"})
    assert only_runner.status_code == 202
    for path in ("/v2/jobs/auth-job-2", "/v2/jobs/auth-job-2/result", "/v2/jobs/auth-job-2?owner=runner"):
        hidden = httpx.get(server.url + path, headers=env_key)
        assert hidden.status_code == 404, path
        assert hidden.json() == {"error": "no job 'auth-job-2'"}  # the same as a job that was never submitted
        assert httpx.get(server.url + path, headers=bearer("boss")).status_code == 200, path
        assert httpx.get(server.url + path, headers=bearer("reader")).status_code == 403  # read is not jobs
    assert httpx.get(server.url + "/v2/jobs/never-was", headers=env_key).json() == {"error": "no job 'never-was'"}
    assert httpx.delete(server.url + "/v2/jobs/auth-job-2", headers=env_key).status_code == 404
    wait_result(server, "auth-job-2", bearer("runner"))
    assert httpx.delete(server.url + "/v2/jobs/auth-job-2", headers=bearer("runner")).status_code == 409  # done

    def listed(headers: dict[str, str], query: str = "") -> list[tuple[str, str]]:
        jobs = httpx.get(server.url + "/v2/jobs" + query, headers=headers).json()["jobs"]
        return sorted((j["id"], j["owner"]) for j in jobs)

    assert listed(env_key) == [("auth-job-1", "from-env")]
    assert listed(env_key, "?owner=runner") == [("auth-job-1", "from-env")]  # ?owner= is an admin's filter
    assert listed(bearer("runner")) == [("auth-job-1", "runner"), ("auth-job-2", "runner")]
    assert listed(bearer("boss")) == [("auth-job-1", "from-env"), ("auth-job-1", "runner"), ("auth-job-2", "runner")]
    assert listed(bearer("boss"), "?owner=from-env") == [("auth-job-1", "from-env")]
    ambiguous = httpx.get(server.url + "/v2/jobs/auth-job-1", headers=bearer("boss"))
    assert ambiguous.status_code == 409
    assert "add ?owner=NAME" in ambiguous.json()["error"]
    picked = httpx.get(server.url + "/v2/jobs/auth-job-1/result?owner=from-env", headers=bearer("boss"))
    assert picked.json()["outputs"][0]["data"] == [6, 6, 6]

    def jobs_cli(key: str | None, *args: str) -> subprocess.CompletedProcess[str]:
        env = cli_env()
        env.pop("INFERD_API_KEY", None)
        if key:
            env["INFERD_API_KEY"] = key
        return subprocess.run([str(BIN / "inferd"), "jobs", *args, "--url", server.url], env=env,
                              capture_output=True, text=True, timeout=60, check=False)

    shown = jobs_cli(KEYS["runner"], "show", "auth-job-1")
    assert shown.returncode == 0, shown.stderr
    assert "succeeded" in shown.stdout
    assert "runner" in shown.stdout
    refused = jobs_cli(None, "show", "auth-job-1")
    assert refused.returncode == 1
    assert "HTTP 401" in refused.stderr
    hidden = jobs_cli(ENV_KEY, "show", "auth-job-2")  # not the batch route's 403 either: simply not there
    assert (hidden.returncode, hidden.stderr.strip()) == (1, "error: HTTP 404: no asynchronous or batch job "
                                                             "'auth-job-2'"), hidden.stderr
    own_list = jobs_cli(ENV_KEY, "list")  # a key without admin lists its own jobs (and no batch jobs)
    assert own_list.returncode == 0, own_list.stderr
    assert "auth-job-1" in own_list.stdout
    assert "auth-job-2" not in own_list.stdout
    result = jobs_cli(KEYS["boss"], "result", "auth-job-1", "--owner", "from-env")
    assert json.loads(result.stdout)["outputs"][0]["data"] == [6, 6, 6], result.stderr


def test_native_route_refusal_keeps_the_connection_and_drops_the_body(server):
    key = b"authorization: Bearer " + KEYS["runner"].encode() + b"\r\n"
    big = orjson.dumps({"inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}],
                        "pad": "x" * 200_000})
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        request = post("/v2/models/adder/infer", big)
        for start in range(0, len(request), 65536):
            sock.sendall(request[start:start + 65536])
        sock.sendall(post("/v2/models/adder/infer", ADD, key))
        (first, _, body), (second, _, _) = read_responses(sock, 2)
    assert first == 401, body
    assert second == 200


def test_pipelined_requests_are_checked_too(server):
    """Requests pipelined behind one still being answered are each checked when their turn comes."""
    read = b"authorization: Bearer " + KEYS["reader"].encode() + b"\r\n"
    run = b"x-api-key: " + KEYS["runner"].encode() + b"\r\n"
    get = b"GET /v2/models/adder HTTP/1.1\r\nhost: x\r\n" + read + b"\r\n"
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(get + post("/v2/models/adder/infer", ADD) + post("/v2/models/adder/infer", ADD, read)
                     + post("/v2/models/adder/infer", ADD, run) + b"GET /v2/models/adder HTTP/1.1\r\nhost: x\r\n\r\n")
        answers = [(status, body) for status, _, body in read_responses(sock, 5)]
    assert [status for status, _ in answers] == [200, 401, 403, 200, 401]
    assert orjson.loads(answers[2][1])["error"] == ("API key 'reader' lacks scope 'infer' needed for "
                                                    "POST /v2/models/adder/infer")


# -- gRPC ---------------------------------------------------------------------------------------------------
def _status(call) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(InferenceServerException) as caught:
        call()
    return str(caught.value.status())


def test_grpc_scopes(server):
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("adder")
        assert _status(lambda: client.infer("adder", adder_grpc_inputs())) == "StatusCode.UNAUTHENTICATED"
        assert _status(lambda: client.infer("adder", adder_grpc_inputs(), headers={"authorization": "Bearer nope"})) \
            == "StatusCode.UNAUTHENTICATED"
        assert _status(lambda: client.infer("adder", adder_grpc_inputs(), headers=bearer("reader"))) \
            == "StatusCode.PERMISSION_DENIED"
        for headers in (bearer("runner"), {"x-api-key": KEYS["runner"]}):
            result = client.infer("adder", adder_grpc_inputs(), headers=headers)
            assert result.as_numpy("sum").tolist() == [[11, 22, 33]]
        assert _status(lambda: client.get_model_metadata("adder", headers=bearer("runner"))) \
            == "StatusCode.PERMISSION_DENIED"
        assert client.get_model_metadata("adder", headers=bearer("reader")).name == "adder"
        assert _status(lambda: client.unload_model("spare", headers=bearer("reader"))) \
            == "StatusCode.PERMISSION_DENIED"
        client.load_model("spare", headers=bearer("boss"))


def test_grpc_refusal_message(server):
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="spare"),
                                     metadata=[("x-api-key", KEYS["reader"])])
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert caught.value.details() == "API key 'reader' lacks scope 'admin' needed for gRPC RepositoryModelLoad"


def test_grpc_refusals_carry_a_request_id(server):
    """Refused before the servicer sees the call, and still with an id in the trailing metadata."""
    request = pb.ServerMetadataRequest()
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as given:
            stub.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=[("x-request-id", "trace-17")])
        with pytest.raises(grpc.RpcError) as new:
            stub.RepositoryIndex(pb.RepositoryIndexRequest())
        assert stub.ServerMetadata(request, metadata=[("x-api-key", KEYS["reader"])]).name
    assert given.value.code() is new.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert dict(given.value.trailing_metadata())["x-request-id"] == "trace-17"
    assert re.fullmatch("[0-9a-f]{32}", dict(new.value.trailing_metadata())["x-request-id"])


def test_grpc_stream_needs_a_key(server):
    request = pb.ModelInferRequest(model_name="adder", inputs=[
        pb.ModelInferRequest.InferInputTensor(name=n, datatype="FP32", shape=[1, 3],
                                              contents=pb.InferTensorContents(fp32_contents=[1, 2, 3]))
        for n in ("a", "b")])
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.ModelStreamInfer(iter([request])))
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
        [answer] = list(stub.ModelStreamInfer(iter([request]), metadata=[("authorization", f"Bearer {ENV_KEY}")]))
        assert answer.error_message == ""
        assert answer.infer_response.model_name == "adder"


# -- starting -----------------------------------------------------------------------------------------------
def test_no_keys_off_loopback_refuses_to_start(repo: Path, tmp_path: Path):
    started = time.monotonic()
    result = inferd("serve", str(repo), "--host", "0.0.0.0", "--http-port", "0", "--grpc-port", "0",
                    "--state-dir", str(tmp_path / "state"), timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    message = " ".join(result.stderr.split())
    assert "refusing to serve on 0.0.0.0 without API keys" in message
    assert "--allow-unauthenticated" in message
    assert "INFERD_ALLOW_UNAUTHENTICATED=true" in message
    assert "HTTP on" not in result.stderr
    assert not (tmp_path / "state").exists()
    assert time.monotonic() - started < 30


def test_broken_keys_file_refuses_to_start(repo: Path, tmp_path: Path):
    keys = tmp_path / "keys.toml"
    keys.write_text(f'[[keys]]\nname = "ci"\nsha256 = "{hash_key("x")}"\nscopes = ["write"]\n')
    result = inferd("serve", str(repo), "--api-keys-file", str(keys), "--http-port", "0", "--grpc-port", "0",
                    "--state-dir", str(tmp_path / "state"), timeout=60)
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert f"{keys}: keys[0]: scopes" in message
    assert "'infer', 'read' or 'admin'" in message
