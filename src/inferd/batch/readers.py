"""Streaming readers: CSV, JSON Lines and Parquet files (gzip for the text formats), local or any fsspec URL.

A location is one file or a folder of them (searched recursively, sorted by path). Each file is read in
blocks and cut into mini-batches of exactly ``batch_size`` rows (the last one may be smaller), so the
mini-batch boundaries depend only on the file and the batch size: a resumed job sees the same ones.
Memory stays bounded by one read block plus one mini-batch, whatever the file's size.

Local files are opened through :class:`~inferd.roots.Roots`: for a job the server runs, every file listed
and every file opened must lie under ``batch_roots`` once symbolic links are followed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from inferd.batch.options import BatchError
from inferd.roots import ANYWHERE, Roots

if TYPE_CHECKING:
    import pyarrow as pa

BLOCK_BYTES = 1 << 20
"""Bytes the CSV and JSON Lines readers parse at a time (and infer column types from, in the first block)."""
SAMPLE_BYTES = 1 << 16
"""Bytes hashed at the head and at the tail of each input file for its fingerprint."""
_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet",
             ".pq": "parquet"}


@dataclass(frozen=True, slots=True)
class InputFile:
    """One input file: where it is and how to read it."""

    url: str
    """What fsspec opens: a local path or a URL."""
    relative: str
    """Its path under the input folder (its name for a single file); names its output file."""
    format: str
    gzip: bool
    size: int
    modified: str
    """Modification time (or ETag, for object stores) as the file system reports it."""
    roots: Roots = ANYWHERE
    """Where a local file must lie when it is opened."""


@dataclass(frozen=True, slots=True)
class MiniBatch:
    file: int
    """Index of the input file in the job's sorted list."""
    index: int
    """Index of the mini-batch within its file."""
    first_row: int
    """Row number (0-based, within the file) of the mini-batch's first row."""
    table: pa.Table
    bytes_read: int
    """How far into the file the reader has got (compressed bytes), for progress estimates."""


def filesystem(location: str) -> tuple[Any, str]:
    """The fsspec file system and path for a local path or URL (fsspec imported here, when needed)."""
    try:
        from fsspec.core import url_to_fs
    except ImportError as exc:  # pragma: no cover - fsspec is a dependency
        raise BatchError("batch jobs need fsspec; install it with: pip install fsspec") from exc
    try:
        fs, path = url_to_fs(location)
        return fs, str(path)
    except (ImportError, ValueError) as exc:
        raise BatchError(f"cannot open {location}: {exc}") from None


def list_inputs(location: str, roots: Roots = ANYWHERE) -> list[InputFile]:
    """The input files at ``location``: the file itself, or every CSV/JSONL/Parquet file under the folder;
    each one, when local, under ``roots`` (:class:`~inferd.roots.OutsideRootsError` otherwise)."""
    fs, root = filesystem(location)
    if not fs.exists(root):
        raise BatchError(f"input {location} does not exist")
    if not fs.isdir(root):
        return [_input_file(fs, location, root, root.rsplit("/", 1)[-1], strict=True, roots=roots)]
    found = []
    for path in sorted(fs.find(root)):
        relative = path[len(root.rstrip("/")) + 1:]
        if any(part.startswith((".", "_")) for part in relative.split("/")):
            continue
        item = _input_file(fs, _url(location, root, path), path, relative, strict=False, roots=roots)
        if item is not None:
            found.append(item)
    if not found:
        raise BatchError(f"input folder {location} holds no .csv, .jsonl or .parquet files (optionally .gz)")
    return found


def _url(location: str, root: str, path: str) -> str:
    """The URL of ``path`` under the folder ``location`` (whose file-system path is ``root``)."""
    if "://" not in location:
        return path
    return location.rstrip("/") + path[len(root.rstrip("/")):]


def _input_file(fs: Any, url: str, path: str, relative: str, strict: bool, roots: Roots) -> Any:
    name = relative.rsplit("/", 1)[-1].lower()
    gzip = name.endswith(".gz")
    stem = name[:-3] if gzip else name
    fmt = next((f for suffix, f in _SUFFIXES.items() if stem.endswith(suffix)), None)
    if fmt is None or (fmt == "parquet" and gzip):
        if strict:
            raise BatchError(f"cannot tell the format of {url}: expected .csv, .jsonl, .ndjson, .json or "
                             ".parquet (the text formats optionally .gz)")
        return None
    local = "file" in _protocols(fs)
    if local:
        roots.check(path, "input file")  # listed: refused before any work (and again when opened)
    info = fs.info(path)
    modified = info.get("mtime") or info.get("LastModified") or info.get("ETag") or info.get("etag") or ""
    return InputFile(url, relative, fmt, gzip, int(info.get("size") or 0), str(modified),
                     roots if local else ANYWHERE)


def fingerprint(item: InputFile) -> dict[str, Any]:
    """What identifies a file's content cheaply: size, modification time and a hash of its head and tail.

    A changed file almost always changes size or modification time; the sampled hash also catches a file
    replaced by another of the same size whose time was preserved. Hashing it all would read it twice."""
    digest = hashlib.sha256()
    with _open_binary(item) as handle:
        digest.update(handle.read(SAMPLE_BYTES))
        if item.size > 2 * SAMPLE_BYTES:
            handle.seek(item.size - SAMPLE_BYTES)
            digest.update(handle.read(SAMPLE_BYTES))
    return {"path": item.relative, "size": item.size, "modified": item.modified, "sample_sha256": digest.hexdigest()}


def count_rows(item: InputFile) -> int | None:
    """Rows in the file when its metadata says (Parquet), else None."""
    if item.format != "parquet":
        return None
    import pyarrow.parquet as pq

    with _open_binary(item) as handle:
        return int(pq.ParquetFile(handle).metadata.num_rows)


def read_schema(item: InputFile) -> pa.Schema:
    """The columns of a file as the reader will deliver them (types from its first block)."""
    with ExitStack() as stack:
        reader, _ = _open(item, stack)
        return reader.schema


def iter_minibatches(item: InputFile, file_index: int, batch_size: int) -> Iterator[MiniBatch]:
    """The file's rows as mini-batches of ``batch_size`` rows, in order, streaming."""
    with ExitStack() as stack:
        reader, raw = _open(item, stack)
        first = 0
        for index, table in enumerate(rebatch(_batches(reader, item), batch_size)):
            yield MiniBatch(file_index, index, first, table, _position(raw, item.size))
            first += table.num_rows


def rebatch(batches: Iterable[pa.RecordBatch], size: int) -> Iterator[pa.Table]:
    """Cut a stream of record batches of any sizes into tables of exactly ``size`` rows (the last may be less)."""
    import pyarrow as pa

    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        while batch.num_rows:
            take = min(size - count, batch.num_rows)
            pending.append(batch.slice(0, take))
            count += take
            batch = batch.slice(take)
            if count == size:
                yield pa.Table.from_batches(pending)
                pending, count = [], 0
    if count:
        yield pa.Table.from_batches(pending)


def _position(raw: Any, size: int) -> int:
    try:
        return int(raw.tell())
    except ValueError:  # a compressed stream closes the file under it at the end
        return size


def _batches(reader: Any, item: InputFile) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa

    try:
        yield from reader
    except (pa.ArrowInvalid, OSError, EOFError) as exc:
        raise BatchError(f"cannot read {item.url}: {exc}") from None


def _open(item: InputFile, stack: ExitStack) -> tuple[Any, Any]:
    """A record batch reader for the file (with ``.schema``, iterable) and the raw file under it."""
    import pyarrow as pa

    fs, path = filesystem(item.url)
    try:
        if "file" in _protocols(fs):  # local: pyarrow's own file, no Python in the read path
            raw: Any = stack.enter_context(pa.OSFile(path, "rb"))
            item.roots.check_open(raw.fileno(), path, "input file")  # the file opened, links followed
        else:
            raw = pa.PythonFile(stack.enter_context(fs.open(path, "rb")), mode="r")
        if item.format == "parquet":
            return _parquet(raw), raw
        stream: Any = pa.CompressedInputStream(raw, "gzip") if item.gzip else raw
        if item.format == "csv":
            return _csv(stream), raw
        return _jsonl(stream), raw
    except (pa.ArrowInvalid, OSError, EOFError) as exc:
        raise BatchError(f"cannot read {item.url}: {exc}") from None


def _open_binary(item: InputFile) -> Any:
    """The file for reading (a local one checked against the item's roots as opened)."""
    fs, path = filesystem(item.url)
    if "file" in _protocols(fs):
        return item.roots.open_file(path, "input file")
    return fs.open(path, "rb")


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _parquet(raw: Any) -> Any:
    import pyarrow.parquet as pq

    # pre_buffer (pyarrow's default) keeps every column chunk read so far: memory grew with the file
    # (274 MiB for 229 MB of Parquet, measured); without it, one row group at a time.
    handle = pq.ParquetFile(raw, pre_buffer=False)

    class _Reader:
        schema = handle.schema_arrow

        def __iter__(self) -> Iterator[pa.RecordBatch]:
            return iter(handle.iter_batches(batch_size=64 * 1024))

    return _Reader()


def _csv(stream: Any) -> Any:
    import pyarrow.csv as pc

    return pc.open_csv(stream, read_options=pc.ReadOptions(block_size=BLOCK_BYTES, use_threads=False))


def _jsonl(stream: Any) -> Any:
    import pyarrow.json as pj

    return pj.open_json(stream, read_options=pj.ReadOptions(block_size=BLOCK_BYTES, use_threads=False))
