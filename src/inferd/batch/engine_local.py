"""The local engine: a bounded pipeline on this machine, nothing else to start.

One reader thread cuts the input files into mini-batches and hands them over a queue of ``concurrency``
slots to ``concurrency`` workers; each worker scores its mini-batch through the DataPlane (where the model's
own executor runs it), then writes the part and journals it from a thread while it scores the next. At most
``3 x concurrency`` mini-batches are in memory at once, whatever the size of the input. Parts can finish in
any order: the assembler writes each output file in input order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from inferd.batch.job import Job
from inferd.batch.readers import MiniBatch, iter_minibatches
from inferd.batch.score import Scorer


async def run_local(job: Job, scorer: Scorer) -> None:
    """Score every mini-batch the journal does not have yet. Raises the first failure of any worker."""
    slots = job.options.concurrency
    queue: asyncio.Queue[MiniBatch | None] = asyncio.Queue(maxsize=slots)
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(slots):
                group.create_task(_work(job, scorer, queue))
            group.create_task(_produce(job, queue, slots))
    except ExceptionGroup as failures:
        raise failures.exceptions[0] from None


async def _produce(job: Job, queue: asyncio.Queue[MiniBatch | None], workers: int) -> None:
    loop = asyncio.get_running_loop()
    done_bytes = 0
    rows_read = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="inferd-batch-read") as reader:
        for index, plan in enumerate(job.plans):
            batches: Iterator[MiniBatch] = iter_minibatches(plan.item, index, job.options.batch_size)
            count = 0
            while (batch := await loop.run_in_executor(reader, next, batches, None)) is not None:
                count += 1
                rows_read += batch.rows
                job.tracker.read_to(done_bytes + batch.bytes_read, rows_read)
                if not job.is_done(batch.file, batch.index):
                    await queue.put(batch)
            done_bytes += plan.item.size
            if job.journal.file_batches.get(index) != count:
                job.journal.record_file(index, count)
    for _ in range(workers):
        await queue.put(None)


async def _work(job: Job, scorer: Scorer, queue: asyncio.Queue[MiniBatch | None]) -> None:
    """Score mini-batches; each one's part is written and journaled in the background (fsync takes a while)
    while the worker goes on with the next, with at most one write pending per worker."""
    writing: asyncio.Future[None] | None = None
    while (batch := await queue.get()) is not None:
        scored = await scorer.score(batch.table, job.plans[batch.file].layout, batch.rejected)
        if writing is not None:
            await writing
        writing = asyncio.ensure_future(asyncio.to_thread(job.store, batch, scored))
    if writing is not None:
        await writing
