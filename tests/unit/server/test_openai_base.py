"""The OpenAI-compatible base: the error form and its statuses, the routes' own error handler, and the models
routes, over the real ASGI app and a real DataPlane."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from asgi_client import AppClient
from fakes import SHOUT, write_model
from inferd.dataplane import DataPlane
from inferd.errors import ErrorCode, InferError
from inferd.repository import ModelRepository
from inferd.security.auth import Authenticator
from inferd.security.keys import ApiKey, hash_key
from inferd.security.scopes import RouteScopes, Scope
from inferd.server.openai.body import field_int, field_str, parse_object, refuse_present
from inferd.server.openai.errors import OpenAIError, error_parts, from_infer_error, invalid_request
from inferd.server.rest.app import build_app
from inferd.server.rest.auth import AuthMiddleware
from inferd.server.rest.errors import HTTPError
from inferd.server.status import HTTP_STATUS
from inferd.settings import ServerSettings

BASE = "/openai/v1"


@pytest.fixture
def plane(python_repo: Path) -> Iterator[DataPlane]:
    write_model(python_repo, "shout", SHOUT)
    write_model(python_repo, "broken", "this is not python(")
    dataplane = DataPlane(ModelRepository(python_repo))
    import asyncio

    asyncio.run(dataplane.start())
    yield dataplane
    dataplane.close()


@pytest.fixture
def client(plane: DataPlane, python_repo: Path) -> AppClient:
    return AppClient(build_app(plane, ServerSettings(repository=python_repo)))


def _error(reply) -> dict:  # type: ignore[no-untyped-def]
    body = reply.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


# -- the error form -------------------------------------------------------------------------------------
@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_neutral_code_keeps_its_rest_status_in_openai_form(code):
    status, headers, body = error_parts(InferError(code, "what went wrong"))
    named = dict(headers)
    assert status == HTTP_STATUS[code]
    error = orjson.loads(body)["error"]
    assert error["message"] == "what went wrong"
    assert error["type"] in {"invalid_request_error", "rate_limit_error", "server_error", "authentication_error",
                             "permission_error"}
    assert (b"retry-after" in named) == (status in (429, 503))
    assert (named.get(b"www-authenticate") == b"Bearer") == (status == 401)
    assert named[b"content-length"] == b"%d" % len(body)


@pytest.mark.parametrize(("code", "status", "kind"), [
    (ErrorCode.INVALID_ARGUMENT, 400, "invalid_request_error"), (ErrorCode.NOT_FOUND, 404, "invalid_request_error"),
    (ErrorCode.RESOURCE_EXHAUSTED, 429, "rate_limit_error"), (ErrorCode.UNAVAILABLE, 503, "server_error"),
    (ErrorCode.INTERNAL, 500, "server_error"),
])
def test_the_statuses_the_openai_client_tells_apart(code, status, kind):
    failure = from_infer_error(InferError(code, "x"), "input")
    assert (failure.status, failure.type, failure.param) == (status, kind, "input")


def test_a_retry_time_given_is_kept_and_a_not_found_names_the_model():
    _, headers, _ = error_parts(InferError(ErrorCode.RESOURCE_EXHAUSTED, "queue full", retry_after_s=7))
    assert dict(headers)[b"retry-after"] == b"7"
    missing = from_infer_error(InferError(ErrorCode.NOT_FOUND, "unknown model 'x'"))
    assert (missing.param, missing.code) == ("model", "model_not_found")


def test_transport_failures_and_bugs_in_openai_form(caplog):
    status, _, body = error_parts(HTTPError(413, "request body is over the limit"))
    assert status == 413
    assert orjson.loads(body)["error"]["type"] == "invalid_request_error"
    status, _, body = error_parts(ValueError("bad"), "a test")
    assert status == 500
    assert orjson.loads(body)["error"] == {"message": "internal server error: ValueError: bad",
                                           "type": "server_error", "param": None, "code": None}
    assert "unexpected error answering a test" in caplog.text


def test_invalid_request_names_the_param():
    failure = invalid_request("'input' must not be empty", "input")
    assert failure.body() == {"error": {"message": "'input' must not be empty", "type": "invalid_request_error",
                                        "param": "input", "code": None}}


# -- body helpers ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "message"), [
    (b"", "the request body is empty"), (b"[1, 2]", "must be a JSON object, not an array"),
    (b'{"a": ', "not valid JSON"), (b'{"input": "\xff\xfe"}', "not valid JSON"),
])
def test_bodies_that_are_not_one_json_object(raw, message):
    with pytest.raises(OpenAIError, match=message) as caught:
        parse_object(raw)
    assert caught.value.status == 400


def test_field_helpers_name_the_field():
    with pytest.raises(OpenAIError, match="'model' is required") as caught:
        field_str({}, "model", required=True)
    assert caught.value.param == "model"
    with pytest.raises(OpenAIError, match="'model' must be a string, not a number"):
        field_str({"model": 3}, "model")
    with pytest.raises(OpenAIError, match="must be one of 'float', 'base64'"):
        field_str({"f": "hex"}, "f", choices=("float", "base64"))
    with pytest.raises(OpenAIError, match="'n' must be at most 1, got 2"):
        field_int({"n": 2}, "n", maximum=1)
    with pytest.raises(OpenAIError, match="'n' must be an integer, not a boolean"):
        field_int({"n": True}, "n")
    with pytest.raises(OpenAIError, match="'tools' is not supported") as caught:
        refuse_present({"tools": []}, ("tools",))
    assert caught.value.param == "tools"
    refuse_present({"tools": None}, ("tools",))


# -- models routes ----------------------------------------------------------------------------------------
def test_models_lists_the_ready_models_in_openai_shape(client: AppClient):
    reply = client.get(f"{BASE}/models")
    assert reply.status_code == 200
    body = reply.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["adder", "failing", "shout"]  # "broken" failed to load
    for card in body["data"]:
        assert card["object"] == "model"
        assert card["owned_by"] == "inferd"
        assert isinstance(card["created"], int)
        assert card["created"] > 0


def test_retrieve_a_model_and_an_unknown_one(client: AppClient):
    reply = client.get(f"{BASE}/models/shout")
    assert reply.status_code == 200
    assert reply.json()["id"] == "shout"
    missing = client.get(f"{BASE}/models/nope")
    assert missing.status_code == 404
    error = _error(missing)
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", "model", "model_not_found")
    assert "'nope' does not exist" in error["message"]
    broken = client.get(f"{BASE}/models/broken")
    assert broken.status_code == 503
    assert "retry-after" in broken.headers
    assert "not ready" in _error(broken)["message"]


def test_unknown_paths_and_methods_under_the_base_answer_in_openai_form(client: AppClient):
    assert _error(client.get(f"{BASE}/nothing"))["code"] == "not_found"
    assert client.post(f"{BASE}/models").status_code == 405
    _error(client.post(f"{BASE}/models"))
    # the rest of the app keeps the V2 form
    assert client.get("/v2/nothing").json() == {"error": "Not Found"}
    assert client.get("/v1/models").json() == {"models": ["adder", "broken", "failing", "shout"]}


def test_a_refused_key_is_answered_in_openai_form_under_the_base(plane: DataPlane, python_repo: Path):
    keys = [ApiKey(name="reader", sha256=hash_key("k2"), scopes=frozenset({Scope.READ}))]
    app = AuthMiddleware(build_app(plane, ServerSettings(repository=python_repo)), Authenticator(keys),
                         RouteScopes())
    client = AppClient(app)
    refused = client.get(f"{BASE}/models")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert _error(refused)["type"] == "authentication_error"
    assert client.get(f"{BASE}/models", headers={"authorization": "Bearer k2"}).status_code == 200
    assert client.post(f"{BASE}/embeddings", headers={"authorization": "Bearer k2"}).status_code == 403
    assert "error" in client.get("/v2/models/adder").json()  # V2 form elsewhere
    assert isinstance(client.get("/v2/models/adder").json()["error"], str)
