"""Scoring one mini-batch through a DataPlane: timeout, retries, and isolating the records that fail.

A mini-batch that fails for a transient reason (timed out, model unavailable or overloaded) is tried again,
``retries`` times with a growing pause. One that fails because of its data (a value that does not fit, a
model that raises) is split in halves, again and again, so every good record is still scored and each bad
one is reported alone with its own error. Both engines (local and Ray) score through this class, so they
produce the same rows and the same error records.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from inferd.batch.mapping import Binding, to_arrays, to_output_table
from inferd.dataplane import DataPlane
from inferd.errors import ErrorCode, InferError, internal
from inferd.inference import InferenceRequest, RequestInput
from inferd.signature import Signature

if TYPE_CHECKING:
    import pyarrow as pa

TRANSIENT = frozenset({ErrorCode.UNAVAILABLE, ErrorCode.RESOURCE_EXHAUSTED, ErrorCode.DEADLINE_EXCEEDED})
"""Failures worth trying again as they are; any other is the data's (or the model's) fault."""
BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0


@dataclass(frozen=True, slots=True)
class FileLayout:
    """How one input file's rows become model inputs and output rows."""

    bindings: tuple[Binding, ...]
    schema: pa.Schema
    """The output's columns."""
    join: bool
    key: str | None


@dataclass(slots=True)
class Scored:
    """A scored mini-batch: the output rows of the records that succeeded, in input order, and the failures
    as (row offset in the mini-batch, error code, message)."""

    output: pa.Table
    failures: list[tuple[int, str, str]]


class Scorer:
    def __init__(self, dataplane: DataPlane, model: str, version: str | None, signature: Signature,
                 timeout_s: float | None, retries: int) -> None:
        self.dataplane = dataplane
        self.model = model
        self.version = version
        self.signature = signature
        self.timeout_s = timeout_s
        self.retries = retries

    async def score(self, table: pa.Table, layout: FileLayout, rejected: Sequence[tuple[int, str]] = ()) -> Scored:
        """The output rows and failures of ``table``; the ``rejected`` rows (offset, why: values the reader could
        not read) fail as they are, never scored."""
        import pyarrow as pa

        if rejected:
            bad = {offset for offset, _ in rejected}
            keep = [i for i in range(table.num_rows) if i not in bad]
            scored = await self.score(table.take(keep), layout)
            moved = [(keep[o], code, message) for o, code, message in scored.failures]
            moved += [(o, ErrorCode.INVALID_ARGUMENT.value, why) for o, why in rejected]
            return Scored(scored.output, sorted(moved))
        pieces: list[pa.Table] = []
        failures: list[tuple[int, str, str]] = []
        await self._score(table, 0, layout, pieces, failures)
        output = pa.concat_tables(pieces) if pieces else layout.schema.empty_table()
        return Scored(output, failures)

    async def _score(self, table: pa.Table, offset: int, layout: FileLayout, pieces: list[pa.Table],
                     failures: list[tuple[int, str, str]]) -> None:
        try:
            outputs = await self._attempt(table, layout.bindings)
        except InferError as exc:
            if exc.code in TRANSIENT or table.num_rows <= 1:  # (0: an empty table, nothing to split)
                failures.extend((offset + i, exc.code.value, exc.message) for i in range(table.num_rows))
                return
            half = table.num_rows // 2
            await self._score(table.slice(0, half), offset, layout, pieces, failures)
            await self._score(table.slice(half), offset + half, layout, pieces, failures)
            return
        pieces.append(to_output_table(layout.schema, table, outputs, self.signature, layout.join, layout.key))

    async def _attempt(self, table: pa.Table, bindings: Sequence[Binding]) -> dict[str, np.ndarray]:
        for attempt in range(self.retries + 1):
            try:
                return await self._infer(table, bindings)
            except InferError as exc:
                if exc.code not in TRANSIENT or attempt == self.retries:
                    raise
                await asyncio.sleep(min(BACKOFF_S * 2**attempt, MAX_BACKOFF_S))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _infer(self, table: pa.Table, bindings: Sequence[Binding]) -> dict[str, np.ndarray]:
        try:  # in a thread: the conversion of one mini-batch overlaps the inference of another
            arrays = to_arrays(bindings, table)
        except InferError:
            raise
        except Exception as exc:  # anything else a conversion raises is this data's failure too
            raise internal(f"could not convert the records: {type(exc).__name__}: {exc}") from None
        inputs = [RequestInput(b.spec.name, b.spec.datatype, list(arrays[b.spec.name].shape), arrays[b.spec.name])
                  for b in bindings]
        request = InferenceRequest(self.model, inputs, model_version=self.version)
        try:
            response = await asyncio.wait_for(self.dataplane.infer(request), self.timeout_s)
        except TimeoutError:
            raise InferError(ErrorCode.DEADLINE_EXCEEDED,
                             f"the mini-batch took longer than the timeout of {self.timeout_s} s") from None
        return {o.name: o.data for o in response.outputs}


def error_records(table: pa.Table, first_row: int, failures: Sequence[tuple[int, str, str]], source: str,
                  key: str | None, unparsed: Sequence[tuple[int, str, str]] = ()) -> list[dict[str, Any]]:
    """One JSON-able record per failed row: where it came from, the record itself and the error. A line the
    reader could not parse into a row (``unparsed``: line number, why, text) has its line and its text instead."""
    records: list[dict[str, Any]] = [
        {"file": source, "line": line, "code": ErrorCode.INVALID_ARGUMENT.value, "error": why, "record": text}
        for line, why, text in unparsed]
    for offset, code, message in failures:
        row = table.slice(offset, 1).to_pylist()[0]
        record: dict[str, Any] = {"file": source, "row": first_row + offset}
        if key is not None:
            record["key"] = row.get(key)
        record.update({"code": code, "error": message, "record": row})
        records.append(record)
    return records
