"""A batch job's plan and bookkeeping, shared by the engines: which files, how each maps to the model and
where its output goes; storing each scored mini-batch; and, at the end, the output files and the summary."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from inferd.batch.assembly import Assembler
from inferd.batch.journal import Done, Journal
from inferd.batch.mapping import bind_inputs, output_schema
from inferd.batch.options import BatchError, BatchOptions, error_limit
from inferd.batch.progress import Tracker
from inferd.batch.readers import InputFile, MiniBatch, read_schema
from inferd.batch.score import FileLayout, Scored, error_records
from inferd.batch.writers import (
    ERRORS_FILE,
    SUMMARY_FILE,
    concat_files,
    encode_errors,
    encode_part,
    output_path,
    write_atomic,
)
from inferd.signature import Signature


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """What a finished (or failed) batch job did."""

    rows_in: int
    rows_out: int
    rows_failed: int
    seconds: float
    """Wall time of this run (a resumed run counts only its own time)."""
    rows_per_s: float
    """Rows this run scored per second."""
    outputs: list[str] = field(default_factory=list)
    errors_file: str | None = None
    batches: int = 0
    resumed_batches: int = 0
    """Mini-batches an earlier, interrupted run had finished."""
    state: str = "succeeded"
    """succeeded, or failed (the error threshold was exceeded)."""
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ThresholdError(BatchError):
    """More records failed than the error threshold allows. The errors file lists them."""

    def __init__(self, message: str, summary: BatchSummary) -> None:
        super().__init__(message)
        self.summary = summary


class Tripped(Exception):  # noqa: N818 - a signal between the engine and the job, never shown
    """Raised by :meth:`Job.store` when the error threshold is exceeded; the job turns it into
    :class:`ThresholdError` with :meth:`Job.tripped`."""


@dataclass(frozen=True, slots=True)
class FilePlan:
    item: InputFile
    layout: FileLayout
    format: str
    destination: Path


def plan_files(files: list[InputFile], signature: Signature, options: BatchOptions, output: Path) -> list[FilePlan]:
    plans = []
    for item in files:
        schema = read_schema(item)
        bindings = bind_inputs(signature, schema, options.mapping, options.key)
        layout = FileLayout(tuple(bindings), output_schema(signature, schema, options.join, options.key),
                            options.join, options.key)
        fmt = options.output_format or item.format
        plans.append(FilePlan(item, layout, fmt, output_path(output, item, fmt)))
    seen: dict[Path, str] = {}
    for plan in plans:
        if plan.destination in seen:
            raise BatchError(f"inputs {seen[plan.destination]} and {plan.item.relative} would both write "
                             f"{plan.destination}; rename one or move it to another folder")
        seen[plan.destination] = plan.item.relative
    return plans


def encode_scored(plan: FilePlan, batch: MiniBatch, scored: Scored) -> tuple[bytes, bytes, int]:
    """A scored mini-batch as the bytes of its output part and of its error records, and the count of those."""
    records = error_records(batch.table, batch.first_row, scored.failures, plan.item.relative, plan.layout.key,
                            batch.unparsed)
    return encode_part(scored.output, plan.format), encode_errors(records), len(records)


class Job:
    """One run of a batch job: its plan, journal and progress."""

    def __init__(self, output: Path, plans: list[FilePlan], options: BatchOptions, journal: Journal,
                 tracker: Tracker, rows_total: int | None) -> None:
        self.output = output
        self.plans = plans
        self.options = options
        self.journal = journal
        self.tracker = tracker
        self.limit = error_limit(options.max_errors, rows_total)
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self.resumed_batches = len(journal.completed)
        self.assembler = Assembler(plans, journal, options.batch_size)
        for done in journal.completed.values():
            tracker.resumed(done.rows, done.failed)

    def is_done(self, file: int, batch: int) -> bool:
        return (file, batch) in self.journal.completed

    def store(self, batch: MiniBatch, scored: Scored) -> None:
        """Write a scored mini-batch's parts and journal it (blocking: call from a thread)."""
        part, errors, failed = encode_scored(self.plans[batch.file], batch, scored)
        self.commit(batch.file, batch.index, batch.rows, part, errors, failed)

    def commit(self, file: int, index: int, rows: int, part: bytes, errors: bytes, failed: int) -> None:
        """Write the encoded parts of a mini-batch, journal it and count it; :class:`Tripped` past the error
        threshold."""
        roots = self.journal.roots
        part_bytes = write_atomic(self.journal.part(file, index), [part], roots)
        error_bytes = write_atomic(self.journal.part(file, index, "errors"), [errors], roots) if errors else 0
        with self._lock:
            self.journal.record(file, index, Done(rows, failed, part_bytes, error_bytes))
            self.tracker.add(rows, failed)
            total_failed = self.tracker.rows_failed
        self.assembler.poke()
        if self.limit is not None and total_failed > self.limit:
            raise Tripped

    def finish(self) -> BatchSummary:
        """Once every mini-batch is done: the errors file, then the output files and the summary."""
        missing = [p.item.relative for i, p in enumerate(self.plans) if i not in self.journal.file_batches]
        if missing:
            raise BatchError(f"the engine stopped before reading {', '.join(missing)} to the end")
        keys = [(i, b) for i in range(len(self.plans)) for b in range(self.journal.file_batches[i])]
        undone = [k for k in keys if k not in self.journal.completed]
        if undone:
            file, batch = undone[0]
            raise BatchError(f"{len(undone)} mini-batch(es) were not scored (the first: file {file}, batch {batch})")
        rows = sum(self.journal.completed[k].rows for k in keys)
        failed = sum(self.journal.completed[k].failed for k in keys)
        errors_path = self._write_errors(keys, failed)
        limit = error_limit(self.options.max_errors, rows)
        if limit is not None and failed > limit:
            message = self._threshold_message(failed, limit)
            summary = self._summary(rows, failed, len(keys), errors_path, "failed", message)
            raise ThresholdError(summary.message, summary)
        self.assembler.finish()
        self.assembler.publish()
        summary = self._summary(rows, failed, len(keys), errors_path, "succeeded", "")
        write_atomic(self.output / SUMMARY_FILE, [orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2)],
                     self.journal.roots)
        self.journal.record_summary(summary.to_dict())
        self.journal.discard_parts()
        return summary

    def _write_errors(self, keys: list[tuple[int, int]], failed: int) -> str | None:
        path = self.output / ERRORS_FILE
        if not failed:
            self.journal.roots.unlink(path)
            return None
        concat_files([self.journal.part(*k, kind="errors") for k in keys if self.journal.completed[k].failed], path,
                     self.journal.roots)
        return str(path)

    def _summary(self, rows: int, failed: int, batches: int, errors_path: str | None, state: str,
                 message: str) -> BatchSummary:
        return BatchSummary(
            rows_in=rows, rows_out=rows - failed, rows_failed=failed,
            seconds=round(time.monotonic() - self.started, 3),
            rows_per_s=round(self.tracker.snapshot().rows_per_s, 1),
            outputs=[str(p.destination) for p in self.plans] if state == "succeeded" else [],
            errors_file=errors_path, batches=batches, resumed_batches=self.resumed_batches,
            state=state, message=message,
        )

    def close(self) -> None:
        """Drop unpublished outputs (a failed or cancelled run) and close the journal."""
        self.assembler.abort()
        self.journal.close()

    def tripped(self) -> ThresholdError:
        """The error for a job stopped by the error threshold, with what it had done (errors file written)."""
        keys = sorted(self.journal.completed)
        rows = sum(self.journal.completed[k].rows for k in keys)
        failed = sum(self.journal.completed[k].failed for k in keys)
        errors_path = self._write_errors(keys, failed)
        limit = self.limit if self.limit is not None else 0
        summary = self._summary(rows, failed, len(keys), errors_path, "failed", self._threshold_message(failed, limit))
        return ThresholdError(summary.message, summary)

    def _threshold_message(self, failed: int, limit: int) -> str:
        allowed = self.options.max_errors
        what = f"{allowed:.2%} of the rows ({limit})" if isinstance(allowed, float) else str(limit)
        return (f"the error threshold was exceeded: {failed} record(s) failed, more than the {what} allowed by "
                f"max_errors; see {self.output / ERRORS_FILE}")
