"""Writing the output files while the job runs: each file from its parts, in input order, on one thread.

A part is appended as soon as it and every part before it in its file are done, so writing the output
overlaps scoring instead of following it. The files stay under temporary names until the job has passed its
error threshold; then :meth:`Assembler.publish` renames them. A run killed part-way leaves only temporary
files and the parts: the next run writes the outputs from the parts again, to the same bytes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from inferd.batch.options import BatchError
from inferd.batch.writers import OutputWriter

if TYPE_CHECKING:
    from inferd.batch.job import FilePlan
    from inferd.batch.journal import Journal


class Assembler:
    def __init__(self, plans: list[FilePlan], journal: Journal, batch_size: int) -> None:
        self._plans = plans
        self._journal = journal
        self._batch_size = batch_size
        self._next = [0] * len(plans)
        self._writers: dict[int, OutputWriter] = {}
        self._finished: dict[int, OutputWriter] = {}
        self._error: BaseException | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inferd-batch-write")

    def poke(self) -> None:
        """A mini-batch was journaled: append whatever is now next in line (in the background)."""
        self._pool.submit(self._advance)

    def finish(self) -> None:
        """Write everything still pending and finish every file (still under its temporary name)."""
        self._pool.submit(self._advance).result()
        self._pool.shutdown(wait=True)
        if self._error is not None:
            raise self._error
        unfinished = [self._plans[i].item.relative for i in range(len(self._plans)) if i not in self._finished]
        if unfinished:
            raise BatchError(f"the output of {', '.join(unfinished)} is incomplete")

    def publish(self) -> None:
        for writer in self._finished.values():
            writer.publish()
        self._finished.clear()

    def abort(self) -> None:
        """Drop every temporary output file (the parts stay, for the next run)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        for writer in [*self._writers.values(), *self._finished.values()]:
            writer.abort()
        self._writers.clear()
        self._finished.clear()

    def _advance(self) -> None:
        if self._error is not None:
            return
        try:
            for index in range(len(self._plans)):
                if index not in self._finished:
                    self._advance_file(index)
        except BaseException as exc:  # kept for finish(), which raises it in the job's own thread
            self._error = exc

    def _advance_file(self, index: int) -> None:
        completed = self._journal.completed
        while (index, self._next[index]) in completed:
            self._writer(index).add(self._journal.part(index, self._next[index]))
            self._next[index] += 1
        if self._journal.file_batches.get(index) == self._next[index]:
            writer = self._writer(index)
            writer.close()
            self._finished[index] = self._writers.pop(index)

    def _writer(self, index: int) -> OutputWriter:
        if index not in self._writers:
            plan = self._plans[index]
            self._writers[index] = OutputWriter(plan.format, plan.layout.schema, plan.destination, self._batch_size,
                                                self._journal.roots)
        return self._writers[index]
