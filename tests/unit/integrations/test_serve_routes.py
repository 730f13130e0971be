"""What a Serve replica refuses (501, V2 error form, before the app), and the replica header on every answer."""

from __future__ import annotations

import asyncio

import pytest
from starlette.responses import PlainTextResponse

from asgi_client import AppClient
from inferd.integrations.serve_routes import ASYNC_REFUSED, ServeRoutes, refusals


async def inner(scope, receive, send):
    if scope["type"] == "lifespan":
        message = await receive()
        await send({"type": message["type"] + ".complete"})
        return
    await PlainTextResponse(f"app {scope['method']} {scope['path']}")(scope, receive, send)


def client(shared_job_store: bool = False) -> AppClient:
    return AppClient(ServeRoutes(inner, refusals(shared_job_store), "r1"))


@pytest.mark.parametrize(("method", "path", "words"), [
    ("POST", "/v2/repository/models/m/load", "loading and unloading models is not served on Ray Serve"),
    ("POST", "/v2/repository/models/m/unload", "deploy again"),
    ("POST", "/v2/batch/jobs", "inferd batch run --engine ray"),
    ("GET", "/v2/batch/jobs/abc", "batch jobs over HTTP on Ray Serve need a job store"),
    ("GET", "/v2/endpoints", "endpoints are not served"),
    ("POST", "/v2/endpoints/e/infer", "endpoints are not served"),
    ("POST", "/v2/systemsharedmemory/region/r/register", "shared memory is not served"),
    ("POST", "/v2/models/m/infer-async", "job_store=postgresql://"),
    ("POST", "/v2/models/m/versions/2/infer-async", "job_store=postgresql://"),
    ("GET", "/v2/jobs", "job_store=postgresql://"),
    ("DELETE", "/v2/jobs/abc", "job_store=postgresql://"),
])
def test_refused_routes_get_501_with_the_reason(method, path, words):
    reply = client().request(method, path)
    assert reply.status_code == 501
    assert words in reply.json()["error"]
    assert reply.headers["inferd-replica"] == "r1"


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v2/models/m/infer"), ("GET", "/v2/health/ready"), ("POST", "/v2/repository/index"),
    ("GET", "/v2/repository/models/m/load"), ("GET", "/v2/systemsharedmemory/status"), ("GET", "/metrics"),
    ("POST", "/v2/models/infer-async-model/infer"),
])
def test_everything_else_reaches_the_app_and_names_the_replica(method, path):
    reply = client().request(method, path)
    assert (reply.status_code, reply.text) == (200, f"app {method} {path}")
    assert reply.headers["inferd-replica"] == "r1"


def test_with_a_shared_job_store_the_async_and_batch_routes_are_served():
    assert set(ASYNC_REFUSED).isdisjoint(refusals(True))
    served = client(shared_job_store=True)
    assert served.post("/v2/models/m/infer-async").text == "app POST /v2/models/m/infer-async"
    assert served.post("/v2/batch/jobs").text == "app POST /v2/batch/jobs"
    assert served.post("/v2/repository/models/m/load").status_code == 501


def test_the_route_prefix_is_not_part_of_the_route():
    routes = ServeRoutes(inner, refusals(False), "r1")
    assert routes.reason("GET", "/v2/jobs") is not None
    assert routes.reason("GET", "/inferd/v2/jobs") is None
    scope = {"type": "http", "method": "GET", "path": "/inferd/v2/jobs", "root_path": "/inferd", "headers": []}
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    asyncio.run(routes(scope, receive, send))
    assert sent[0]["status"] == 501


def test_lifespan_events_pass_through():
    sent: list[dict] = []

    async def receive():
        return {"type": "lifespan.startup"}

    async def send(message):
        sent.append(message)

    asyncio.run(ServeRoutes(inner, (), "r1")({"type": "lifespan"}, receive, send))
    assert sent == [{"type": "lifespan.startup.complete"}]
