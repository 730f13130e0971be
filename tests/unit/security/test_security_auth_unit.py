"""The scope tables, the Authenticator, the start-up rule and the TLS settings check."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from inferd.errors import ErrorCode, InferError
from inferd.security.auth import Authenticator, key_from_headers, key_from_metadata
from inferd.security.keys import ApiKey, hash_key
from inferd.security.scopes import RouteScopes, Scope, grpc_scope
from inferd.security.startup import SecurityConfigError, build_authenticator, is_loopback
from inferd.security.tls import TLSFiles
from inferd.settings import ServerSettings

KEYS = [ApiKey(name="runner", sha256=hash_key("k1"), scopes=frozenset({Scope.INFER})),
        ApiKey(name="reader", sha256=hash_key("k2"), scopes=frozenset({Scope.READ})),
        ApiKey(name="boss", sha256=hash_key("k3"), scopes=frozenset({Scope.ADMIN}))]


@pytest.mark.parametrize(("method", "path", "scope"), [
    ("GET", "/v2/health/live", None), ("GET", "/v2/health/ready", None), ("GET", "/ping", None),
    ("GET", "/v2/models/m/ready", None), ("GET", "/v2/models/m/versions/2/ready", None),
    ("GET", "/vertex/health", None),
    ("POST", "/v2/models/m/infer", Scope.INFER), ("POST", "/v2/models/m/versions/1/infer-async", Scope.INFER),
    ("POST", "/v1/models/m:predict", Scope.INFER), ("POST", "/invocations", Scope.INFER),
    ("POST", "/vertex/predict", Scope.INFER),
    ("GET", "/v2", Scope.READ), ("GET", "/v2/models/m", Scope.READ), ("GET", "/v2/models/m/config", Scope.READ),
    ("GET", "/v2/models/stats", Scope.READ), ("POST", "/v2/repository/index", Scope.READ),
    ("GET", "/v2/jobs/abc/result", Scope.INFER), ("GET", "/docs", Scope.READ), ("GET", "/openapi.json", Scope.READ),
    ("GET", "/anything/else", Scope.READ), ("HEAD", "/v2/health/live", Scope.READ),
    ("GET", "/v2/models/m/infer", Scope.READ),
    ("POST", "/v2/repository/models/m/load", Scope.ADMIN), ("POST", "/v2/repository/models/m/unload", Scope.ADMIN),
    ("POST", "/v2/batch/jobs", Scope.ADMIN), ("GET", "/v2/batch/jobs/1", Scope.ADMIN),
    ("DELETE", "/v2/jobs/abc", Scope.INFER), ("GET", "/v2/jobs", Scope.INFER),
    ("POST", "/openai/v1/embeddings", Scope.INFER), ("POST", "/openai/v1/chat/completions", Scope.INFER),
    ("POST", "/openai/v1/completions", Scope.INFER), ("GET", "/openai/v1/models", Scope.READ),
    ("POST", "/v1/embeddings", Scope.READ),
])
def test_route_table(method: str, path: str, scope: Scope | None):
    assert RouteScopes("/vertex/health", "/vertex/predict").scope_for(method, path) is scope


@pytest.mark.parametrize(("method", "scope"), [
    ("ServerLive", None), ("ModelReady", None), ("ModelInfer", Scope.INFER), ("ModelStreamInfer", Scope.INFER),
    ("ModelMetadata", Scope.READ), ("RepositoryIndex", Scope.READ), ("RepositoryModelLoad", Scope.ADMIN),
    ("SomethingNew", Scope.ADMIN),
])
def test_grpc_table(method: str, scope: Scope | None):
    assert grpc_scope(f"/inference.GRPCInferenceService/{method}") is scope
    assert grpc_scope(f"/some.OtherService/{method}") is Scope.ADMIN
    assert grpc_scope(f"/grpc.health.v1.Health/{method}") is Scope.ADMIN  # only Check and Watch are open


@pytest.mark.parametrize(("method", "scope"), [
    ("/grpc.health.v1.Health/Check", None), ("/grpc.health.v1.Health/Watch", None),
    ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", Scope.READ),
])
def test_grpc_health_is_open_and_reflection_is_metadata(method: str, scope: Scope | None):
    assert grpc_scope(method) is scope


def test_key_from_headers_and_metadata():
    assert key_from_headers([(b"authorization", b"Bearer  abc ")]) == b"abc"
    assert key_from_headers([(b"authorization", b"BEARER abc")]) == b"abc"
    assert key_from_headers([(b"x-api-key", b"xyz"), (b"authorization", b"Bearer abc")]) == b"abc"
    assert key_from_headers([(b"authorization", b"Basic dXNlcg=="), (b"x-api-key", b"xyz")]) == b"xyz"
    assert key_from_headers([(b"authorization", b"Basic dXNlcg==")]) is None
    assert key_from_headers([(b"authorization", b"Bearer ")]) is None
    assert key_from_metadata([("x-api-key", "k"), ("user-agent", "grpc")]) == b"k"
    assert key_from_metadata(None) is None


def _refusal(call) -> InferError:  # type: ignore[no-untyped-def]
    with pytest.raises(InferError) as caught:
        call()
    return caught.value


def test_authenticator_decisions():
    auth = Authenticator(KEYS)
    assert auth.check(None, None, "GET", "/v2/health/live") is None
    missing = _refusal(lambda: auth.check(None, Scope.READ, "GET", "/v2"))
    assert missing.code is ErrorCode.UNAUTHENTICATED
    assert "Authorization: Bearer <key> or x-api-key" in missing.message
    wrong = _refusal(lambda: auth.check(b"k4", Scope.READ, "GET", "/v2"))
    assert (wrong.code, wrong.message) == (ErrorCode.UNAUTHENTICATED, "invalid API key")
    denied = _refusal(lambda: auth.check(b"k2", Scope.ADMIN, "POST", "/v2/repository/models/x/load"))
    assert denied.code is ErrorCode.PERMISSION_DENIED
    assert denied.message == "API key 'reader' lacks scope 'admin' needed for POST /v2/repository/models/x/load"
    assert auth.check(b"k1", Scope.INFER, "POST", "/x") == auth.principal(b"k1")
    assert _refusal(lambda: auth.check(b"k1", Scope.READ, "GET", "/v2")).code is ErrorCode.PERMISSION_DENIED
    boss = auth.check(b"k3", Scope.INFER, "POST", "/x")
    assert boss is not None
    assert boss.name == "boss"
    assert boss.allows(Scope.READ)
    with pytest.raises(ValueError, match="at least one key"):
        Authenticator([])


def test_check_costs_microseconds():
    """The per-request cost with keys on: header scan, sha256, dictionary lookup, scope test."""
    auth = Authenticator(KEYS * 1 + [ApiKey(name=f"k{i}", sha256=hash_key(f"x{i}"), scopes=frozenset({Scope.READ}))
                                     for i in range(1000)])
    headers = [(b"host", b"x"), (b"user-agent", b"python-httpx/0.28"), (b"content-type", b"application/json"),
               (b"content-length", b"120"), (b"authorization", b"Bearer k1")]
    rounds = 20_000
    started = time.perf_counter()
    for _ in range(rounds):
        auth.check_headers(headers, Scope.INFER, "POST", "/v2/models/m/infer")
    per_call_us = (time.perf_counter() - started) / rounds * 1e6
    print(f"Authenticator.check_headers: {per_call_us:.2f} us per call")
    assert per_call_us < 25


def _settings(**given: object) -> ServerSettings:
    return ServerSettings(**given)  # type: ignore[arg-type]


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.8.9.1", True), ("::1", True),
                                                ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                                                ("::", False), ("10.1.2.3", False), ("example.com", False)])
def test_loopback(host: str, loopback: bool):
    assert is_loopback(host) is loopback


def test_startup_rule(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("INFERD_API_KEYS", raising=False)
    assert build_authenticator(_settings(host="127.0.0.1")) is None
    with pytest.raises(SecurityConfigError, match="refusing to serve on 0.0.0.0 without API keys"):
        build_authenticator(_settings(host="0.0.0.0"))
    with caplog.at_level(logging.WARNING, logger="inferd.security.startup"):
        assert build_authenticator(_settings(host="0.0.0.0", allow_unauthenticated=True)) is None
    assert "SECURITY WARNING: serving on 0.0.0.0 WITHOUT AUTHENTICATION" in caplog.text
    found = build_authenticator(_settings(host="0.0.0.0", api_keys=[KEYS[0].to_record()]))
    assert found is not None
    assert len(found) == 1


def test_tls_settings_check(tmp_path: Path):
    assert TLSFiles.from_settings(None, None, None) is None
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("not a certificate")
    key.write_text("not a key")
    with pytest.raises(SecurityConfigError, match="needs both tls_certfile and tls_keyfile"):
        TLSFiles.from_settings(cert, None, None)
    with pytest.raises(SecurityConfigError, match="tls_client_ca needs TLS"):
        TLSFiles.from_settings(None, None, cert)
    with pytest.raises(SecurityConfigError, match="tls_keyfile .* does not exist"):
        TLSFiles.from_settings(cert, tmp_path / "missing.pem", None)
    with pytest.raises(SecurityConfigError, match="cannot use the TLS files"):
        TLSFiles.from_settings(cert, key, None)
