"""The server's batch jobs over a real SQLite job store whose writes fail for a while (as a database away does):
the run's end is stored once the store takes it, and the loop goes on to the next job."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from batch_models import FEATURES, PICKY, feature_table, write_python_model, write_table
from inferd.batch.options import BatchOptions
from inferd.batch.server_jobs import BatchJobs
from inferd.dataplane import DataPlane
from inferd.errors import unavailable
from inferd.jobs.sqlite_store import SqliteJobStore
from inferd.repository import ModelRepository


class AwayAtFirst(SqliteJobStore):
    """A real store whose first ``failures`` ends are refused as UNAVAILABLE."""

    failures = 2
    refused = 0

    async def batch_end(self, job_id: str, attempt: int, state: str, now: float, **kwargs: Any) -> bool:
        if self.refused < self.failures:
            self.refused += 1
            raise unavailable("the job store cannot be reached")
        return await super().batch_end(job_id, attempt, state, now, **kwargs)


def test_an_end_the_store_refused_is_stored_later_and_the_next_job_runs(tmp_path: Path) -> None:
    root, work = tmp_path / "models", tmp_path / "work"
    write_python_model(root, "picky", PICKY)
    source = write_table(feature_table(40, seed=5), work / "in.parquet")
    options = BatchOptions(batch_size=10, mapping={"input": ",".join(FEATURES)}, max_errors=40)

    async def main() -> None:
        plane = DataPlane(ModelRepository(root))
        await plane.start()
        store = AwayAtFirst(tmp_path / "state")
        await store.open()
        jobs = BatchJobs(plane, [str(work)], store)
        jobs.start()
        try:
            first = await jobs.submit("picky", str(source), str(work / "a"), options)
            second = await jobs.submit("picky", str(source), str(work / "b"), options)
            for _ in range(500):  # two refusals: 0.5 s and 1 s of waiting (END_RETRY_S, doubling)
                states = [(await jobs.get(j.id)).state for j in (first, second)]  # type: ignore[union-attr]
                if states == ["succeeded", "succeeded"]:
                    break
                await asyncio.sleep(0.02)
            assert states == ["succeeded", "succeeded"]
            assert store.refused == 2
        finally:
            await jobs.stop()
            await store.close()
            plane.close()

    asyncio.run(main())
