"""docs/security.md's scope table says what src/inferd/security/scopes.py does: each route the table names is in
the row of the scope the code asks for (issue 23: the page said async results need ``read``; they need ``infer``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from inferd.security.scopes import RouteScopes, Scope, grpc_scope

DOC = Path(__file__).resolve().parents[3] / "docs" / "security.md"


def scope_rows() -> dict[Scope | None, str]:
    """The scope table: scope (None for the open row) -> what its row allows."""
    rows: dict[Scope | None, str] = {}
    names = "|".join(scope.value for scope in Scope)
    for line in DOC.read_text(encoding="utf-8").splitlines():
        found = re.match(rf"^\| (\(none\)|`({names})`)\s*\| (.+) \|$", line)
        if found:
            rows[Scope(found.group(2)) if found.group(2) else None] = found.group(3)
    assert set(rows) == {None, *Scope}, "the scope table of docs/security.md was not found"
    return rows


# (method, path as the code sees it, the words the table uses for it)
HTTP_SAMPLES = [
    ("GET", "/v2/health/ready", "`/v2/health/ready`"),
    ("GET", "/v2/models/m/ready", "model readiness"),
    ("POST", "/v2/models/m/infer", "`POST .../infer`"),
    ("POST", "/v2/models/m/infer-async", "`.../infer-async`"),
    ("GET", "/v2/jobs", "`GET /v2/jobs[/{id}[/result]]`"),
    ("GET", "/v2/jobs/abc", "`GET /v2/jobs[/{id}[/result]]`"),
    ("GET", "/v2/jobs/abc/result", "`GET /v2/jobs[/{id}[/result]]`"),
    ("DELETE", "/v2/jobs/abc", "`DELETE /v2/jobs/{id}`"),
    ("POST", "/invocations", "`/invocations`"),
    ("POST", "/v2/repository/index", "`POST /v2/repository/index`"),
    ("POST", "/v2/endpoints/e/infer", "`POST /v2/endpoints/{e}/infer`"),
    ("GET", "/v2/endpoints/e/history", "`GET /v2/endpoints...`"),
    ("PUT", "/v2/endpoints/e", "`PUT`/`DELETE /v2/endpoints/{e}`"),
    ("POST", "/v2/endpoints/e/rollout", "`POST /v2/endpoints/{e}/rollout`"),
    ("GET", "/metrics", "`/metrics`"),
    ("GET", "/docs", "`/docs`"),
    ("POST", "/v2/repository/models/m/load", "repository load and unload"),
    ("POST", "/v2/batch/jobs", "batch jobs (`/v2/batch/jobs...`)"),
    ("POST", "/v2/systemsharedmemory/region/r/register", "`/v2/systemsharedmemory/...`"),
    ("GET", "/v2/systemsharedmemory/status", "`/v2/systemsharedmemory/...`"),
    ("POST", "/v2/cudasharedmemory/unregister", "`/v2/cudasharedmemory/...`"),
]


@pytest.mark.parametrize(("method", "path", "words"), HTTP_SAMPLES)
def test_the_table_puts_each_route_in_the_row_of_the_scope_the_code_asks(method, path, words):
    rows = scope_rows()
    wanted = RouteScopes().scope_for(method, path)
    assert words in rows[wanted], f"{method} {path} needs {wanted}; the table's row for it does not say {words!r}"
    others = [scope for scope, text in rows.items() if scope is not wanted and words in text]
    assert others == [], f"{words!r} is also in the row of {others}"


@pytest.mark.parametrize(("method", "words"), [("ModelInfer", "`ModelInfer`"), ("ServerLive", "`ServerLive`"),
                                                ("ModelMetadata", "gRPC metadata"),
                                                ("RepositoryModelLoad", "`RepositoryModelLoad`"),
                                                ("SystemSharedMemoryRegister", "`SystemSharedMemory*`")])
def test_grpc_methods_are_in_the_row_of_their_scope(method, words):
    assert words in scope_rows()[grpc_scope(f"/inference.GRPCInferenceService/{method}")]


def test_the_prose_agrees_that_async_jobs_need_infer_only():
    text = " ".join(DOC.read_text(encoding="utf-8").split())
    assert "`read` to fetch status and results" not in text
    assert "A client of asynchronous inference needs `infer` only" in text
    assert RouteScopes().scope_for("GET", "/v2/jobs/abc/result") is Scope.INFER
