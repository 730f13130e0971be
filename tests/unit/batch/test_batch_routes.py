"""The batch job routes over the real ASGI app and a real DataPlane, in one event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from batch_models import FEATURES, PICKY, SLOW, feature_table, read_output, write_python_model, write_table
from inferd.batch.server_jobs import BatchJobs
from inferd.dataplane import DataPlane
from inferd.jobs.sqlite_store import SqliteJobStore
from inferd.repository import ModelRepository
from inferd.server.rest.app import build_app
from inferd.settings import ServerSettings

Scenario = Callable[[httpx.AsyncClient], Awaitable[None]]


def run_scenario(root: Path, scenario: Scenario, **settings: Any) -> None:
    """The scenario against the app, with batch jobs kept in a real SQLite job store beside ``root``."""
    async def main() -> None:
        plane = DataPlane(ModelRepository(root))
        await plane.start()
        store = SqliteJobStore(root.parent / "state")
        await store.open()
        server_settings = ServerSettings(repository=root, **settings)
        jobs = BatchJobs(plane, server_settings.batch_roots, store)
        jobs.start()
        try:
            app = build_app(plane, server_settings, batch_jobs=jobs)
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                await scenario(client)
        finally:
            await jobs.stop()
            await store.close()
            plane.close()

    asyncio.run(main())


async def wait_finished(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    for _ in range(500):
        status = (await client.get(url)).json()
        if status["state"] not in ("queued", "running"):
            return status
        await asyncio.sleep(0.02)
    raise AssertionError(f"job still {status['state']}")


def test_a_job_runs_and_reports_progress_and_summary(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_python_model(root, "picky", PICKY)
    source = write_table(feature_table(300, seed=3), tmp_path / "work" / "in.parquet")

    async def scenario(client: httpx.AsyncClient) -> None:
        body = {"model": "picky", "input": str(source), "output": str(tmp_path / "work" / "out"), "batch_size": 50,
                "key": "id", "mapping": {"input": ",".join(FEATURES)}, "max_errors": "10%"}
        reply = await client.post("/v2/batch/jobs", json=body)
        assert reply.status_code == 202, reply.text
        url = reply.json()["status_url"]
        assert reply.headers["location"] == url
        status = await wait_finished(client, url)
        assert status["state"] == "succeeded", status
        assert (status["rows_done"], status["rows_total"]) == (300, 300)
        assert status["rows_failed"] == status["summary"]["rows_failed"] > 0
        assert status["summary"]["rows_out"] == 300 - status["rows_failed"]
        assert status["rows_per_s"] > 0
        listing = (await client.get("/v2/batch/jobs")).json()["jobs"]
        assert [j["id"] for j in listing] == [reply.json()["id"]]
        again = await client.post("/v2/batch/jobs", json={**body, "output": str(tmp_path / "work" / "out2")})
        assert again.status_code == 202, again.text
        await wait_finished(client, again.json()["status_url"])
        listing = (await client.get("/v2/batch/jobs")).json()["jobs"]
        assert [j["id"] for j in listing] == [again.json()["id"], reply.json()["id"]]  # newest first, as /v2/jobs

    run_scenario(root, scenario, batch_roots=[str(tmp_path / "work")])
    assert read_output(tmp_path / "work" / "out" / "in.parquet").num_rows > 250


def test_refusals_name_the_reason(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_python_model(root, "picky", PICKY)
    inside = tmp_path / "work"
    inside.mkdir()

    async def scenario(client: httpx.AsyncClient) -> None:
        ok = {"model": "picky", "input": str(inside / "in.csv"), "output": str(inside / "out")}
        outside = await client.post("/v2/batch/jobs", json={**ok, "input": str(tmp_path / "secret.csv")})
        assert outside.status_code == 403
        assert "outside the folders the batch_roots setting allows" in outside.json()["error"]
        unknown = await client.post("/v2/batch/jobs", json={**ok, "model": "nope"})
        assert unknown.status_code == 404
        bad = await client.post("/v2/batch/jobs", json={**ok, "batch_size": 0, "colour": "red"})
        assert bad.status_code == 400
        assert "colour" in bad.json()["error"]
        invalid = await client.post("/v2/batch/jobs", json={**ok, "batch_size": 0})
        assert invalid.status_code == 400
        assert "batch_size must be a positive integer" in invalid.json()["error"]
        missing = await client.get("/v2/batch/jobs/abc")
        assert missing.status_code == 404

    run_scenario(root, scenario, batch_roots=[str(inside)])


def test_batch_jobs_are_off_without_roots(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_python_model(root, "picky", PICKY)

    async def scenario(client: httpx.AsyncClient) -> None:
        reply = await client.post("/v2/batch/jobs", json={"model": "picky", "input": "/a.csv", "output": "/out"})
        assert reply.status_code == 403
        assert "set batch_roots (INFERD_BATCH_ROOTS" in reply.json()["error"]

    run_scenario(root, scenario)


def test_a_running_job_is_cancelled_and_a_finished_one_is_not(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_python_model(root, "slow", SLOW)
    source = write_table(feature_table(800, seed=1), tmp_path / "work" / "in.csv")

    async def scenario(client: httpx.AsyncClient) -> None:
        body = {"model": "slow", "input": str(source), "output": str(tmp_path / "work" / "out"), "batch_size": 10,
                "concurrency": 1, "mapping": {"input": ",".join(FEATURES)}}
        job_id = (await client.post("/v2/batch/jobs", json=body)).json()["id"]
        for _ in range(500):
            if (await client.get(f"/v2/batch/jobs/{job_id}")).json()["rows_done"] >= 20:
                break
            await asyncio.sleep(0.02)
        cancelled = await client.delete(f"/v2/batch/jobs/{job_id}")
        assert (cancelled.status_code, cancelled.json()["state"]) == (200, "cancelled")
        await asyncio.sleep(1.0)  # past the running job's next progress write: it has stopped
        stopped = (await client.get(f"/v2/batch/jobs/{job_id}")).json()
        assert stopped["state"] == "cancelled"
        assert stopped["rows_done"] < 800
        again = await client.post("/v2/batch/jobs", json=body)  # the folder is free: the journal resumes it
        assert again.status_code == 202, again.text
        finished = await wait_finished(client, again.json()["status_url"])
        assert finished["state"] == "succeeded", finished
        assert finished["summary"]["resumed_batches"] > 0
        refused = await client.delete(f"/v2/batch/jobs/{again.json()['id']}")
        assert refused.status_code == 409
        assert (await client.delete("/v2/batch/jobs/nobody")).status_code == 404
        assert (await client.get("/v2/batch/jobs", params={"limit": 0})).status_code == 400
        assert len((await client.get("/v2/batch/jobs", params={"limit": 1})).json()["jobs"]) == 1

    run_scenario(root, scenario, batch_roots=[str(tmp_path / "work")])
    assert read_output(tmp_path / "work" / "out" / "in.csv").num_rows == 800


def test_without_a_job_store_batch_jobs_are_unavailable(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_python_model(root, "picky", PICKY)

    async def main() -> None:
        plane = DataPlane(ModelRepository(root))
        await plane.start()
        try:
            app = build_app(plane, ServerSettings(repository=root, batch_roots=[str(tmp_path)]))
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                reply = await client.post("/v2/batch/jobs", json={"model": "picky", "input": str(tmp_path / "a.csv"),
                                                                  "output": str(tmp_path / "out")})
                assert reply.status_code == 503
                assert "the job store is not open" in reply.json()["error"]
                assert "retry-after" in reply.headers
        finally:
            plane.close()

    asyncio.run(main())
