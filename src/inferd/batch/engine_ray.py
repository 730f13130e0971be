"""The Ray engine: Ray Data ``map_batches`` over an actor pool, each actor holding the model in its own
DataPlane.

Read tasks run the same streaming readers as the local engine, one task per input file, and hand each
mini-batch on as a one-row block (the rows as an Arrow IPC payload, so files of different columns share one
block schema). Actors score them with the same :class:`~inferd.batch.score.Scorer` and encode them with the
same writers; the driver writes the parts, journals them and assembles the output as the local engine does,
so both engines give the same bytes. Connects to ``RAY_ADDRESS``, or starts a local Ray (and stops it after).

On small machines actors and read tasks ask for ``num_cpus=0.5``: with a whole CPU each, the read task can
wait forever for a CPU the actors hold.
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from inferd.batch.job import FilePlan, Job, encode_scored
from inferd.batch.options import BatchError
from inferd.batch.readers import MiniBatch, iter_minibatches
from inferd.batch.score import Scorer

CPUS_PER_WORKER = 0.5
_COLUMNS = ("file", "batch", "first_row", "bytes_read", "batches", "payload", "notes")


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise BatchError("the ray engine needs ray; install it with: pip install 'inferd[ray]'") from None
    return ray


def run_ray(job: Job, repository: Path, scorer: Scorer) -> None:
    """Score every mini-batch the journal does not have yet on Ray (blocking)."""
    ray = _ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False,
                 log_to_driver=False, logging_level="warning")
    try:
        _run(ray, job, repository, scorer)
    finally:
        if started_here:
            ray.shutdown()


def _run(ray: Any, job: Job, repository: Path, scorer: Scorer) -> None:
    done = frozenset(job.journal.completed)
    source = _datasource(ray)(job.plans, job.options.batch_size, done)
    dataset = ray.data.read_datasource(source, num_cpus=CPUS_PER_WORKER)
    scored = dataset.map_batches(
        _actor_class(), batch_size=1, batch_format="pyarrow", concurrency=job.options.concurrency,
        num_cpus=CPUS_PER_WORKER,
        fn_constructor_kwargs={"repository": str(repository), "model": scorer.model, "version": scorer.version,
                               "timeout_s": scorer.timeout_s, "retries": scorer.retries, "plans": job.plans},
    )
    offsets = [sum(p.item.size for p in job.plans[:i]) for i in range(len(job.plans))]
    for block in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
        for row in block.to_pylist():
            if row["batch"] < 0:
                job.journal.record_file(row["file"], row["batches"])
                continue
            job.tracker.read_to(offsets[row["file"]] + row["bytes_read"], 0)
            job.commit(row["file"], row["batch"], row["rows"], row["part"], row["errors"], row["failed"])


def _datasource(ray: Any) -> Any:
    import pyarrow as pa

    class MiniBatches(ray.data.Datasource):  # type: ignore[misc]
        """One read task per input file, yielding its not-yet-done mini-batches as one-row blocks."""

        def __init__(self, plans: list[FilePlan], batch_size: int, done: frozenset[tuple[int, int]]) -> None:
            super().__init__()
            self.plans, self.batch_size, self.done = plans, batch_size, done

        def estimate_inmemory_data_size(self) -> int:
            return sum(p.item.size for p in self.plans)

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list[Any]:
            from ray.data.block import BlockMetadata
            from ray.data.datasource import ReadTask

            return [ReadTask(functools.partial(self._read, i),
                             BlockMetadata(num_rows=None, size_bytes=p.item.size, input_files=(p.item.url,),
                                           exec_stats=None))
                    for i, p in enumerate(self.plans)]

        def _read(self, file: int) -> Iterator[pa.Table]:
            count = 0
            for batch in iter_minibatches(self.plans[file].item, file, self.batch_size):
                count += 1
                if (file, batch.index) not in self.done:
                    yield _block(file, batch.index, batch.first_row, batch.bytes_read, -1, _ipc(batch.table),
                                 batch.notes())
            yield _block(file, -1, 0, 0, count, b"", b"")

    return MiniBatches


def _block(file: int, batch: int, first_row: int, bytes_read: int, batches: int, payload: bytes,
           notes: bytes) -> Any:
    import pyarrow as pa

    return pa.table({"file": [file], "batch": [batch], "first_row": [first_row], "bytes_read": [bytes_read],
                     "batches": [batches], "payload": pa.array([payload], pa.binary()),
                     "notes": pa.array([notes], pa.binary())})


def _ipc(table: Any) -> bytes:
    import pyarrow as pa

    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _actor_class() -> type:
    class ScoreActor:
        """Holds the model: its own repository, DataPlane and event loop."""

        def __init__(self, repository: str, model: str, version: str | None, timeout_s: float | None,
                     retries: int, plans: list[FilePlan]) -> None:
            from inferd.dataplane import DataPlane
            from inferd.repository import ModelRepository

            repo = ModelRepository(Path(repository))
            repo.load(model)
            self.dataplane = DataPlane(repo)
            self.loop = asyncio.new_event_loop()
            signature = self.dataplane.signature(model, version)
            self.scorer = Scorer(self.dataplane, model, version, signature, timeout_s, retries)
            self.plans = plans

        def __call__(self, block: Any) -> Any:
            import pyarrow as pa

            rows = [self._score(row) for row in block.to_pylist()]
            return pa.Table.from_pylist(rows, schema=pa.schema([
                ("file", pa.int64()), ("batch", pa.int64()), ("batches", pa.int64()), ("bytes_read", pa.int64()),
                ("rows", pa.int64()), ("failed", pa.int64()), ("part", pa.binary()), ("errors", pa.binary())]))

        def _score(self, row: dict[str, Any]) -> dict[str, Any]:
            import pyarrow as pa

            reply = {k: row[k] for k in ("file", "batch", "batches", "bytes_read")}
            if row["batch"] < 0:
                return {**reply, "rows": 0, "failed": 0, "part": b"", "errors": b""}
            table = pa.ipc.open_stream(row["payload"]).read_all()
            plan = self.plans[row["file"]]
            batch = MiniBatch(row["file"], row["batch"], row["first_row"], table, row["bytes_read"]).noted(row["notes"])
            scored = self.loop.run_until_complete(self.scorer.score(table, plan.layout, batch.rejected))
            part, errors, failed = encode_scored(plan, batch, scored)
            return {**reply, "rows": batch.rows, "failed": failed, "part": part, "errors": errors}

    return ScoreActor
