"""Reading a whole table (CSV, JSON Lines or Parquet, gzip for the text formats) for the tools.

What ``inferd batch run`` writes reads back as it was scored: a folder of output files is read in path order
(its ``_errors.jsonl``, ``_summary.json`` and hidden files such as the job's journal left out), and the JSON
text a CSV output holds for a list column (``[0.1, 0.9]``) becomes a list column again.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

if TYPE_CHECKING:
    import pyarrow as pa

SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet",
            ".pq": "parquet"}
SKIPPED = ("_errors.jsonl", "_summary.json")


class TableError(ValueError):
    """A file that cannot be read as a table, or a column that is not what a tool needs."""


def read_table(path: Path) -> pa.Table:
    """The rows of ``path`` (a file, or a folder of files of one format), as one Arrow table."""
    import pyarrow as pa

    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _format(p) and p.name not in SKIPPED
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise TableError(f"{path}: no CSV, JSON Lines or Parquet file in this folder")
        tables = [_read_file(p) for p in files]
        try:
            return pa.concat_tables(tables, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise TableError(f"{path}: its files do not have the same columns: {exc}") from None
    if not path.is_file():
        raise TableError(f"{path}: no such file or folder")
    return _read_file(path)


def _format(path: Path) -> str | None:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return SUFFIXES.get(Path(name).suffix.lower())


def _read_file(path: Path) -> pa.Table:
    import pyarrow as pa

    fmt = _format(path)
    if fmt is None:
        raise TableError(f"{path}: not a CSV, JSON Lines or Parquet file (by its extension: "
                         f"{', '.join(SUFFIXES)}, or .gz of a text format)")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if fmt == "jsonl":
            import pyarrow.json as pj

            return pj.read_json(path)
        import pyarrow.csv as pc

        return _lists_from_json_text(pc.read_csv(path))
    except (pa.ArrowInvalid, OSError) as exc:
        raise TableError(f"{path}: cannot read it as {fmt}: {exc}") from None


def _lists_from_json_text(table: pa.Table) -> pa.Table:
    """A text column whose every value is a JSON list (how a CSV holds a list column) as a list column."""
    import pyarrow as pa

    for index, field in enumerate(table.schema):
        if not pa.types.is_string(field.type) or table.num_rows == 0:
            continue
        values = table.column(index).to_pylist()
        if not all(isinstance(v, str) and v.startswith("[") and v.endswith("]") for v in values):
            continue
        try:
            parsed = [orjson.loads(v) for v in values]
            column = pa.array(parsed)
        except (orjson.JSONDecodeError, pa.ArrowInvalid, pa.ArrowTypeError):
            continue
        table = table.set_column(index, pa.field(field.name, column.type), column)
    return table


def column_array(table: pa.Table, name: str, what: str) -> np.ndarray:
    """Column ``name`` as numpy (a list column as a 2-D array); TableError naming the columns when absent."""
    import pyarrow as pa

    if name not in table.schema.names:
        raise TableError(f"no {what} column {name!r}; the columns are {', '.join(map(repr, table.schema.names))}")
    column = table.column(name)
    if column.null_count:
        raise TableError(f"{what} column {name!r} has {column.null_count} missing value(s)")
    kind = column.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        rows = column.to_pylist()
        widths = {len(r) for r in rows}
        if len(widths) > 1:
            raise TableError(f"{what} column {name!r} holds lists of different lengths ({sorted(widths)})")
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), widths.pop() if widths else 0)
    array: Any = column.to_numpy()
    return np.asarray(array)
