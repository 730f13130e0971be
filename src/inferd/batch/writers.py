"""Output files: each mini-batch's rows encoded as a part file, and the parts joined into one output file per
input file at the end.

Every write is atomic (a temporary name, fsync, then rename), and nothing written depends on the time, the
machine or how the work was split: CSV and JSON Lines parts are the final bytes of their rows and are
concatenated; Parquet parts are Arrow IPC streams whose rows are re-cut into row groups of ``batch_size`` rows
when the output is assembled. An interrupted and resumed job therefore writes the same bytes as one that ran
straight through.

Every file is created, renamed and read through :class:`~inferd.roots.Roots`: a job the server runs writes
only inside ``batch_roots``, whatever symbolic links its output folder holds.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from inferd.batch.readers import InputFile, rebatch
from inferd.roots import ANYWHERE, Roots

if TYPE_CHECKING:
    import pyarrow as pa

EXTENSIONS = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet"}
ERRORS_FILE = "_errors.jsonl"
SUMMARY_FILE = "_summary.json"


def output_path(folder: Path, item: InputFile, fmt: str) -> Path:
    """Where the output of ``item`` goes: its relative path under ``folder``, uncompressed, and with the
    output format's extension when that differs from the input's."""
    relative = item.relative[:-3] if item.gzip else item.relative
    if fmt != item.format:
        stem = relative.rsplit(".", 1)[0]
        relative = stem + EXTENSIONS[fmt]
    return folder / relative


def encode_part(table: pa.Table, fmt: str) -> bytes:
    """The bytes of one mini-batch's output rows (Parquet: an Arrow IPC stream, written as Parquet later)."""
    import pyarrow as pa

    if fmt == "parquet":
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue()
    table = _shortest_floats(table)
    if fmt == "csv":
        return _csv_bytes(table, header=False)
    return b"".join(orjson.dumps(row, default=_json_default) + b"\n" for row in table.to_pylist())


def encode_errors(records: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r, default=_json_default) + b"\n" for r in records)


def write_atomic(path: Path, chunks: Iterable[bytes], roots: Roots = ANYWHERE) -> int:
    """Write ``chunks`` to ``path`` through a temporary file, fsync, rename, all inside the one folder
    (checked against ``roots`` as opened). Returns the bytes written."""
    roots.makedirs(path.parent)
    temporary = f".{path.name}.tmp"
    size = 0
    with roots.folder(path.parent) as folder:
        with roots.create(folder, temporary) as handle:
            for chunk in chunks:
                handle.write(chunk)
                size += len(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path.name, src_dir_fd=folder, dst_dir_fd=folder)
    return size


class OutputWriter:
    """One output file, written part by part in input order under a temporary name, renamed by :meth:`close`.

    Parquet row groups hold ``batch_size`` rows each (the last may hold fewer) whatever the sizes of the parts,
    so the file does not depend on which records failed in which part or on how an engine split the work."""

    def __init__(self, fmt: str, schema: pa.Schema, destination: Path, batch_size: int,
                 roots: Roots = ANYWHERE) -> None:
        self.fmt, self.schema, self.destination, self.batch_size = fmt, schema, destination, batch_size
        self.roots = roots
        roots.makedirs(destination.parent)
        self._temporary = destination.with_name(f".{destination.name}.tmp")
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._rows = 0
        with roots.folder(destination.parent) as folder:
            self._file = roots.create(folder, self._temporary.name)
        if fmt == "parquet":
            import pyarrow.parquet as pq

            self._parquet: Any = pq.ParquetWriter(self._file, schema, compression="snappy")
        elif fmt == "csv":
            self._file.write(_csv_bytes(schema.empty_table(), header=True))

    def add(self, part: Path) -> None:
        if self.fmt != "parquet":
            with self.roots.open_file(part, "part file") as handle:
                shutil.copyfileobj(handle, self._file, 1 << 20)
            return
        for batch in _ipc_batches([part], self.roots):
            self._pending.append(batch)
            self._pending_rows += batch.num_rows
            if self._pending_rows >= self.batch_size:
                self._flush(final=False)

    def close(self) -> None:
        """Finish the temporary file (flushed and fsynced); :meth:`publish` then gives it its name."""
        if self.fmt == "parquet":
            self._flush(final=True)
            if not self._rows:
                self._parquet.write_table(self.schema.empty_table())
            self._parquet.close()  # the file stays open: it is ours
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def publish(self) -> None:
        self.roots.replace(self._temporary, self.destination)

    def abort(self) -> None:
        """Drop the temporary file (closed first when still open)."""
        if self.fmt == "parquet":
            self._parquet.close()
        if not self._file.closed:
            self._file.close()
        self.roots.unlink(self._temporary)

    def _flush(self, final: bool) -> None:
        groups = list(rebatch(self._pending, self.batch_size))
        keep = [] if final or not groups or groups[-1].num_rows == self.batch_size else [groups.pop()]
        for group in groups:
            self._parquet.write_table(group, row_group_size=self.batch_size)
            self._rows += group.num_rows
        self._pending = [b for t in keep for b in t.to_batches()]
        self._pending_rows = sum(b.num_rows for b in self._pending)


def assemble(parts: Sequence[Path], fmt: str, schema: pa.Schema, destination: Path, batch_size: int,
             roots: Roots = ANYWHERE) -> None:
    """Join the part files, in order, into the output file (atomically)."""
    writer = OutputWriter(fmt, schema, destination, batch_size, roots)
    try:
        for part in parts:
            writer.add(part)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    writer.publish()


def concat_files(parts: Sequence[Path], destination: Path, roots: Roots = ANYWHERE) -> None:
    write_atomic(destination, _concat(parts, roots), roots)


def _concat(parts: Sequence[Path], roots: Roots) -> Iterator[bytes]:
    for part in parts:
        with roots.open_file(part, "part file") as handle:
            while chunk := handle.read(1 << 20):
                yield chunk


def _ipc_batches(parts: Sequence[Path], roots: Roots) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa

    for part in parts:
        with roots.open_file(part, "part file") as handle, pa.ipc.open_stream(pa.py_buffer(handle.read())) as reader:
            yield from reader


def _csv_bytes(table: pa.Table, header: bool) -> bytes:
    import pyarrow.csv as pc

    table = _lists_as_json_text(table)
    sink = io.BytesIO()
    pc.write_csv(table, sink, write_options=pc.WriteOptions(include_header=header))
    data = sink.getvalue()
    if header and table.num_rows == 0 and not data:  # pragma: no cover - older pyarrow writes nothing
        data = (",".join(table.schema.names) + "\n").encode()
    return data


def _lists_as_json_text(table: pa.Table) -> pa.Table:
    """CSV has no list type: a list column becomes its JSON text, ``[0.1, 0.9]``."""
    import pyarrow as pa

    for index, field in enumerate(table.schema):
        kind = field.type
        if pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind) or pa.types.is_large_list(kind):
            text = pa.array([orjson.dumps(v).decode() for v in table.column(index).to_pylist()], type=pa.string())
            table = table.set_column(index, pa.field(field.name, pa.string()), text)
    return table


def _shortest_floats(table: pa.Table) -> pa.Table:
    """For the text formats: FP32 (and FP16) columns, and lists of them, as float64 columns that print the
    shortest form of each value (``0.99924076``, not ``0.9992407560348511``; see ``tensors.shortest_float64``)."""
    import pyarrow as pa

    for index, field in enumerate(table.schema):
        kind = _widened(field.type)
        if kind is not None:
            chunks = [_as_shortest(chunk) for chunk in table.column(index).chunks]
            table = table.set_column(index, pa.field(field.name, kind), pa.chunked_array(chunks, type=kind))
    return table


def _widened(kind: pa.DataType) -> pa.DataType | None:
    """The type a narrow float column (or list of them) prints from; None for any other column."""
    import pyarrow as pa

    if pa.types.is_float16(kind) or pa.types.is_float32(kind):
        return pa.float64()
    inner = _widened(kind.value_type) if pa.types.is_list(kind) or pa.types.is_large_list(kind) or \
        pa.types.is_fixed_size_list(kind) else None
    if inner is None:
        return None
    if pa.types.is_fixed_size_list(kind):
        return pa.list_(inner, kind.list_size)
    return pa.large_list(inner) if pa.types.is_large_list(kind) else pa.list_(inner)


def _as_shortest(array: pa.Array) -> pa.Array:
    import pyarrow as pa

    from inferd.tensors import shortest_float64

    kind = array.type
    nulls = array.is_null() if array.null_count else None
    if pa.types.is_fixed_size_list(kind):
        return pa.FixedSizeListArray.from_arrays(_as_shortest(array.flatten()), kind.list_size, mask=nulls)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        offsets = array.offsets.to_numpy()
        factory = pa.LargeListArray if pa.types.is_large_list(kind) else pa.ListArray
        return factory.from_arrays(pa.array(offsets - offsets[0]), _as_shortest(array.flatten()), mask=nulls)
    values = shortest_float64(array.to_numpy(zero_copy_only=False))
    return pa.array(values, type=pa.float64(), mask=None if nulls is None else nulls.to_numpy(zero_copy_only=False))


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)
