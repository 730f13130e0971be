"""The asynchronous inference routes in process (the real FastAPI app, DataPlane, SQLite store and worker; httpx
over ASGI): results identical to the synchronous route, bad input, idempotency, cancel, input references, TTL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from callback_receiver import CallbackReceiver
from fakes import ADDER, FAILING, write_model
from inferd.dataplane import DataPlane
from inferd.jobs.service import AsyncConfig, AsyncService
from inferd.repository import ModelRepository
from inferd.server.rest.app import build_app
from inferd.settings import ServerSettings
from job_fakes import write_v0_store

GATED = """
import time
from pathlib import Path

class Model:
    inputs = [{"name": "x", "datatype": "INT64", "shape": [-1]}]
    outputs = [{"name": "y", "datatype": "INT64", "shape": [-1]}]

    def load(self, path):
        self.gate = Path(path) / "open"

    def predict(self, inputs):
        x = inputs["x"]
        deadline = time.monotonic() + 20
        while (x == 99).any() and not self.gate.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        return {"y": x * 2}
"""

ADD = {"inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]},
                  {"name": "b", "datatype": "FP32", "shape": [1, 3], "data": [1, 1, 1]}]}
Client = httpx.AsyncClient
Body = Callable[[Client, AsyncService], Awaitable[Any]]


def gated(x: int) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [x]}]}


@pytest.fixture
def repo(repo_root: Path) -> Path:
    write_model(repo_root, "adder", ADDER)
    write_model(repo_root, "failing", FAILING)
    write_model(repo_root, "gated", GATED)
    return repo_root


@pytest.fixture
def api(repo: Path, tmp_path: Path) -> Callable[..., Any]:
    """``api(body, **config)`` runs ``body(client, service)`` against a started server app."""

    def run(body: Body, **config: Any) -> Any:
        async def main() -> Any:
            plane = DataPlane(ModelRepository(repo))
            await plane.start()
            options = {"inline_payload_bytes": 64, "retry_backoff_s": 0.01, "max_body_bytes": 4096, **config}
            service = AsyncService(plane, AsyncConfig(tmp_path / "state", **options))
            await service.open()
            service.start()
            app: Any = build_app(plane, ServerSettings(repository=repo), service)
            try:
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://inferd") as c:
                    return await body(c, service)
            finally:
                await service.stop()
                plane.close()

        return asyncio.run(main())

    return run


async def wait_status(client: Client, job_id: str, statuses: tuple[str, ...] = ("succeeded", "failed", "cancelled"),
                      timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status: dict[str, Any] = (await client.get(f"/v2/jobs/{job_id}")).json()
        if status["status"] in statuses:
            return status
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {job_id} still {status['status']}")


async def submit(client: Client, body: Any, model: str = "adder", **kwargs: Any) -> httpx.Response:
    if isinstance(body, dict):
        kwargs["json"] = body
    else:
        kwargs["content"] = body
    return await client.post(f"/v2/models/{model}/infer-async", **kwargs)


def test_result_is_exactly_what_the_sync_route_returns(api, tmp_path):
    header = json.dumps({"inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 3],
                                     "parameters": {"binary_data_size": 12}},
                                    {"name": "b", "datatype": "FP32", "shape": [1, 3], "data": [1, 1, 1]}],
                         "outputs": [{"name": "sum", "parameters": {"binary_data": True}}, {"name": "total"}]}).encode()
    binary = header + b"\x00\x00\x80?\x00\x00\x00@\x00\x00@@"  # 1, 2, 3 as little-endian float32
    binary_headers = {"inference-header-content-length": str(len(header))}

    async def body(client: Client, service: AsyncService) -> None:
        for content, headers in ((ADD, {}), (binary, binary_headers)):
            submitted = await submit(client, content, headers=headers)
            assert submitted.status_code == 202
            reply = submitted.json()
            assert set(reply) == {"id", "status_url", "result_url"}
            assert submitted.headers["location"] == reply["status_url"] == f"/v2/jobs/{reply['id']}"
            status = await wait_status(client, reply["id"])
            assert (status["status"], status["attempts"], status["error"]) == ("succeeded", 1, None)
            assert status["created_at"] <= status["started_at"] <= status["finished_at"]
            result = await client.get(reply["result_url"])
            kwargs = {"json": content} if isinstance(content, dict) else {"content": content}
            sync = await client.post("/v2/models/adder/infer", headers=headers, **kwargs)
            assert (result.status_code, result.content) == (200, sync.content)
            for name in ("content-type", "inference-header-content-length"):
                assert result.headers.get(name) == sync.headers.get(name)
        assert "inference-header-content-length" in sync.headers  # the binary case really was binary
        assert any(n.endswith(".result") for n in service.files.names())  # results over 64 bytes are files

    api(body)


def test_unknown_model_or_version_is_404_and_nothing_is_stored(api, tmp_path):
    async def body(client: Client, service: AsyncService) -> None:
        for path in ("/v2/models/nope/infer-async", "/v2/models/adder/versions/7/infer-async"):
            reply = await client.post(path, content=b"x" * 1000)
            sync = await client.post(path.replace("infer-async", "infer"), json=ADD)
            assert (reply.status_code, reply.json()) == (404, sync.json())
        assert (await client.get("/v2/jobs")).json() == {"jobs": []}
        assert service.files.names() == set()

    api(body)


def test_a_body_over_the_async_limit_is_413_and_leaves_nothing(api):
    async def chunks():
        for _ in range(10):
            yield b"x" * 1000

    async def body(client: Client, service: AsyncService) -> None:
        declared = await submit(client, b"x" * 5000)
        assert declared.status_code == 413
        assert declared.json() == {"error": "request body is over the limit of 4096 bytes (async_max_body_bytes)"}
        streamed = await client.post("/v2/models/adder/infer-async", content=chunks())  # chunked, no length
        assert streamed.status_code == 413
        assert "over the limit of 4096 bytes" in streamed.json()["error"]
        assert (await client.get("/v2/jobs")).json() == {"jobs": []}
        assert service.files.names() == set()

    api(body)


def test_the_same_inference_id_returns_the_same_job(api):
    async def body(client: Client, service: AsyncService) -> None:
        first = await submit(client, ADD, headers={"Inference-Id": "order-17"})
        again = await submit(client, ADD, headers={"Inference-Id": "order-17"})
        assert (first.status_code, again.status_code) == (202, 200)
        assert first.json() == again.json()
        assert first.json()["id"] == "order-17"
        other = await submit(client, {**ADD, "parameters": {"x": 1}}, headers={"Inference-Id": "order-17"})
        assert (other.status_code, other.json()) == (
            409, {"error": "job 'order-17' already exists with a different request"})
        # the V2 id field of a JSON body is the key only when Inference-Id-From-Body asks for it
        plain = [await submit(client, {**ADD, "id": "v2-id"}) for _ in range(2)]
        assert [r.status_code for r in plain] == [202, 202]
        assert "v2-id" not in [r.json()["id"] for r in plain]
        assert plain[0].json()["id"] != plain[1].json()["id"]
        from_body = {"Inference-Id-From-Body": "true"}
        v2 = [await submit(client, {**ADD, "id": "v2-id"}, headers=from_body) for _ in range(2)]
        assert [r.status_code for r in v2] == [202, 200]
        assert v2[0].json()["id"] == "v2-id"
        for headers, request, message in [
            (from_body, ADD, 'the body has no string "id" field'),
            ({**from_body, "Inference-Id": "x"}, {**ADD, "id": "y"}, "not both"),
            ({"Inference-Id-From-Body": "maybe"}, ADD, "must be true or false"),
            (from_body, {**ADD, "id": "no spaces"}, "cannot name a job"),
            (from_body, {**ADD, "id": "v2-id", "pad": "x" * 2000}, "async_inline_payload_bytes"),
            ({"Inference-Id": "no spaces/slashes"}, ADD, "cannot name a job"),
        ]:
            bad = await submit(client, request, headers=headers)
            assert bad.status_code == 400, bad.text
            assert message in bad.json()["error"]
        assert service.files.names() == set()  # the refused large body left no payload file
        listed = (await client.get("/v2/jobs")).json()["jobs"]
        assert sorted(j["id"] for j in listed) == sorted(["order-17", "v2-id", *(r.json()["id"] for r in plain)])
        assert (await wait_status(client, "order-17"))["status"] == "succeeded"
        assert (await submit(client, ADD, headers={"Inference-Id": "order-17"})).status_code == 200

    api(body, inline_payload_bytes=1024)  # the V2 id is read from bodies small enough to be kept inline


def test_a_request_that_fails_validation_fails_with_the_sync_message(api):
    wrong = {"inputs": [{"name": "a", "datatype": "INT32", "shape": [1, 3], "data": [1, 2, 3]},
                        {"name": "b", "datatype": "FP32", "shape": [1, 3], "data": [1, 1, 1]}]}

    async def body(client: Client, service: AsyncService) -> None:
        sync = await client.post("/v2/models/adder/infer", json=wrong)
        for bad in (wrong, b"{not json"):
            job = (await submit(client, bad)).json()
            status = await wait_status(client, job["id"])
            assert (status["status"], status["attempts"], status["error"]["code"]) == (
                "failed", 1, "INVALID_ARGUMENT")  # not retried: it cannot pass
            result = await client.get(job["result_url"])
            expected = sync if bad is wrong else await client.post("/v2/models/adder/infer", content=bad)
            assert (result.status_code, result.json()) == (expected.status_code, expected.json())
            assert result.status_code == 400
        model_error = (await submit(client, {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1],
                                                          "data": [-1]}]}, model="failing")).json()
        status = await wait_status(client, model_error["id"])
        assert (status["status"], status["attempts"]) == ("failed", 3)  # INTERNAL is retried, up to the limit
        assert status["error"]["message"] == "model 'failing' failed: ValueError: negative values are not allowed"
        assert (await client.get(model_error["result_url"])).status_code == 500

    api(body)


def test_cancel_a_queued_job_but_not_a_running_or_finished_one(api, repo):
    async def body(client: Client, service: AsyncService) -> None:
        held = (await submit(client, gated(99), model="gated")).json()
        await wait_status(client, held["id"], ("running",))
        waiting = (await submit(client, gated(1), model="gated")).json()
        assert (await client.get(f"/v2/jobs/{waiting['id']}")).json()["status"] == "queued"
        not_ready = await client.get(held["result_url"])
        assert (not_ready.status_code, not_ready.headers["retry-after"]) == (409, "1")
        assert not_ready.json() == {"error": f"job {held['id']!r} is running; its result is not ready yet"}
        cancelled = await client.delete(f"/v2/jobs/{waiting['id']}")
        assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
        assert cancelled.json()["finished_at"] is not None
        assert (await client.get(waiting["result_url"])).status_code == 409
        running = await client.delete(f"/v2/jobs/{held['id']}")
        assert (running.status_code, running.json()) == (
            409, {"error": f"job {held['id']!r} is running; only a queued job can be cancelled"})
        (repo / "gated" / "1" / "open").touch()
        assert (await wait_status(client, held["id"]))["status"] == "succeeded"
        assert (await client.delete(f"/v2/jobs/{held['id']}")).status_code == 409
        assert (await client.delete("/v2/jobs/nobody")).status_code == 404
        assert (await client.get("/v2/jobs/nobody")).json() == {"error": "no job 'nobody'"}
        assert (await wait_status(client, waiting["id"]))["status"] == "cancelled"  # and it never ran

    api(body, concurrency_per_model=1)


def test_list_filters(api):
    async def body(client: Client, service: AsyncService) -> None:
        ids = [(await submit(client, ADD)).json()["id"] for _ in range(3)]
        failed = (await submit(client, b"{}", model="failing")).json()["id"]
        for job_id in [*ids, failed]:
            await wait_status(client, job_id)
        listed = (await client.get("/v2/jobs", params={"model": "adder", "limit": 2})).json()["jobs"]
        assert [j["id"] for j in listed] == ids[::-1][:2]  # newest first
        failures = (await client.get("/v2/jobs", params={"status": "failed"})).json()["jobs"]
        assert [j["id"] for j in failures] == [failed]
        bad = await client.get("/v2/jobs", params={"status": "done"})
        assert bad.status_code == 400
        assert "unknown status 'done'" in bad.json()["error"]

    api(body)


def test_input_references_read_files_under_the_allowed_roots(api, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "req.json").write_text(json.dumps(ADD))
    (tmp_path / "outside.json").write_text(json.dumps(ADD))
    (inputs / "big.json").write_bytes(b" " * 5000)

    async def body(client: Client, service: AsyncService) -> None:
        job = await submit(client, b"", headers={"Inference-Input-Location": str(inputs / "req.json")})
        assert job.status_code == 202
        await wait_status(client, job.json()["id"])
        result = await client.get(job.json()["result_url"])
        assert result.content == (await client.post("/v2/models/adder/infer", json=ADD)).content
        outside = await submit(client, b"", headers={"Inference-Input-Location": str(tmp_path / "outside.json")})
        assert outside.status_code == 400
        assert "outside the folders the async_input_roots setting allows" in outside.json()["error"]
        big = await submit(client, b"", headers={"Inference-Input-Location": str(inputs / "big.json")})
        assert big.status_code == 413

    api(body, input_roots=(str(inputs),))


def test_an_input_swapped_for_a_symbolic_link_after_submission_fails_the_job_when_it_opens_it(api, repo, tmp_path):
    """Checked at submission, then (while the job waits behind another) replaced by a link to a file outside the
    root: the job opens the link, refuses it, and fails with a message naming the path and the setting."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "req.json").write_text(json.dumps(gated(2)))
    (tmp_path / "secret.json").write_text(json.dumps(gated(3)))

    async def body(client: Client, service: AsyncService) -> None:
        held = (await submit(client, gated(99), model="gated")).json()
        await wait_status(client, held["id"], ("running",))
        job = await submit(client, b"", model="gated", headers={"Inference-Input-Location": str(inputs / "req.json")})
        assert job.status_code == 202
        (inputs / "req.json").unlink()
        (inputs / "req.json").symlink_to(tmp_path / "secret.json")
        (repo / "gated" / "1" / "open").touch()
        status = await wait_status(client, job.json()["id"])
        assert (status["status"], status["attempts"], status["error"]["code"]) == ("failed", 1, "INVALID_ARGUMENT")
        assert status["error"]["message"] == (
            f"input location {inputs / 'req.json'} leads to {tmp_path / 'secret.json'}, which is outside the "
            f"folders the async_input_roots setting allows ({inputs})")

    api(body, input_roots=(str(inputs),), concurrency_per_model=1)


def test_input_references_are_refused_without_roots(api, tmp_path):
    async def body(client: Client, service: AsyncService) -> None:
        reply = await submit(client, b"", headers={"Inference-Input-Location": str(tmp_path / "x.json")})
        assert reply.status_code == 400
        assert "INFERD_ASYNC_INPUT_ROOTS" in reply.json()["error"]

    api(body)


def test_finished_jobs_expire_after_the_ttl_and_lose_their_payloads(api):
    async def body(client: Client, service: AsyncService) -> None:
        job = (await submit(client, ADD)).json()
        await wait_status(client, job["id"])
        assert len(service.files.names()) == 2  # request (over 64 bytes) and result
        status = await wait_status(client, job["id"], ("expired",), timeout=5)
        assert status["status"] == "expired"
        gone = await client.get(job["result_url"])
        assert gone.status_code == 410
        assert "expired" in gone.json()["error"]
        # the sweep commits "expired" first and deletes the files after (a crash between loses no result)
        deadline = asyncio.get_running_loop().time() + 5
        while service.files.names() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        assert service.files.names() == set()

    api(body, ttl_s=0.3)


def test_callback_urls_are_checked_and_chosen(api):
    async def body(client: Client, service: AsyncService) -> None:
        bad = await submit(client, ADD, headers={"Inference-Callback-Url": "ftp://x"})
        assert bad.status_code == 400
        assert "http:// or https://" in bad.json()["error"]
        # the server's own callback URLs are allowed destinations, exactly (not the rest of their host)
        same = await submit(client, ADD, headers={"Inference-Callback-Url": "http://127.0.0.1:9/adder"})
        assert same.status_code == 202
        other = await submit(client, ADD, headers={"Inference-Callback-Url": "http://127.0.0.1:9/admin"})
        assert other.status_code == 400
        assert service.callback_for("adder", None) == "http://127.0.0.1:9/adder"
        assert service.callback_for("failing", None) == "http://127.0.0.1:9/default"
        assert service.callback_for("adder", "http://127.0.0.1:9/default") == "http://127.0.0.1:9/default"

    api(body, callback_url="http://127.0.0.1:9/default", model_callback_urls={"adder": "http://127.0.0.1:9/adder"})


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:27999/internal/admin?x=1", "http://localhost:8080/", "http://10.0.0.1/", "http://192.168.0.10/",
    "http://169.254.169.254/latest/meta-data/", "http://[::1]:8080/", "http://[::ffff:127.0.0.1]:8080/",
    "http://[fe80::1]/", "http://2130706433:8080/", "http://0x7f.1/", "http://0.0.0.0:8080/",
    "https://hooks.example.com.evil.test/",
])
def test_a_callback_destination_not_allowed_is_refused_at_submit_naming_the_setting(api, url):
    async def body(client: Client, service: AsyncService) -> None:
        refused = await submit(client, ADD, headers={"Inference-Callback-Url": url})
        assert refused.status_code == 400
        assert "Inference-Callback-Url" in refused.json()["error"]
        assert "async_callback_allowed" in refused.json()["error"]
        assert (await client.get("/v2/jobs")).json()["jobs"] == []  # nothing stored

    api(body, callback_allowed=("hooks.example.com",))


def test_an_allowed_loopback_receiver_gets_its_callback(api):
    with CallbackReceiver() as receiver:
        async def body(client: Client, service: AsyncService) -> dict[str, Any]:
            job = (await submit(client, ADD, headers={"Inference-Callback-Url": receiver.url})).json()
            await wait_status(client, job["id"])
            await service.callbacks.idle()
            return dict((await client.get(job["status_url"])).json())

        status = api(body, callback_allowed=("127.0.0.1",))
    assert status["callback"]["state"] == "delivered"
    assert [r["body"]["id"] for r in receiver.received] == [status["id"]]
    assert receiver.received[0]["body"]["status_url"] == f"/v2/jobs/{status['id']}"


@pytest.mark.parametrize("public_url", ["", "https://inferd.example.com/base"])
def test_job_links_never_come_from_the_host_header(api, public_url):
    """A forged Host header is not echoed into ``Location`` or the links: they are paths, or start with the
    ``public_url`` setting."""
    forged = {"Host": "evil.example", "X-Forwarded-Host": "evil.example"}

    async def body(client: Client, service: AsyncService) -> None:
        submitted = await submit(client, ADD, headers=forged)
        job = submitted.json()
        links = f"{public_url}/v2/jobs/{job['id']}"
        assert submitted.headers["location"] == job["status_url"] == links
        assert job["result_url"] == f"{links}/result"
        status = (await client.get(f"/v2/jobs/{job['id']}", headers=forged)).json()
        listed = (await client.get("/v2/jobs", headers=forged)).json()["jobs"]
        assert status["status_url"] == listed[0]["status_url"] == links
        assert "evil" not in json.dumps([job, status, listed])

    api(body, public_url=public_url)


def test_a_state_folder_in_use_turns_async_off_with_a_clear_503(api, repo, tmp_path):
    async def body(client: Client, service: AsyncService) -> None:
        plane = DataPlane(ModelRepository(repo))
        second = AsyncService(plane, AsyncConfig(tmp_path / "state"))
        await second.open()
        second.start()
        app = build_app(plane, ServerSettings(repository=repo), second)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://other") as other:
            reply = await other.post("/v2/models/adder/infer-async", json=ADD)
            listed = await other.get("/v2/jobs")
        await second.stop()
        assert reply.status_code == listed.status_code == 503
        assert "asynchronous inference is off: another inferd server" in reply.json()["error"]
        assert (await submit(client, ADD)).status_code == 202  # the first is unaffected

    api(body)


def test_jobs_of_a_store_from_before_per_key_ids_are_still_served(api, tmp_path):
    """An old state folder (user_version 0, job ids global): its finished job's result and status are served under
    the same id, and its queued job runs to the same result the synchronous route gives."""
    request = json.dumps(ADD).encode()
    base = {"model": "adder", "created_at": 1.0, "updated_at": 1.0, "digest": "d"}
    write_v0_store(tmp_path / "state", [
        {**base, "id": "old-done", "status": "succeeded", "attempts": 1, "finished_at": time.time(),
         "request_size": len(request), "request_inline": request, "result_size": 9, "result_inline": b'{"old":1}'},
        {**base, "id": "old-queued", "status": "queued", "request_size": len(request), "request_inline": request},
    ], with_owner=False)

    async def body(client: Client, service: AsyncService) -> None:
        done = await client.get("/v2/jobs/old-done/result")
        assert (done.status_code, done.content) == (200, b'{"old":1}')
        assert (await client.get("/v2/jobs/old-done")).json()["status_url"].endswith("/v2/jobs/old-done")
        status = await wait_status(client, "old-queued")
        assert status["status"] == "succeeded"
        result = await client.get(status["result_url"])
        assert result.json() == (await client.post("/v2/models/adder/infer", json=ADD)).json()

    api(body, inline_payload_bytes=4096)
