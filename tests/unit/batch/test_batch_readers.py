from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from batch_models import feature_table, write_table
from inferd.batch import BatchError
from inferd.batch.readers import count_rows, fingerprint, iter_minibatches, list_inputs, read_schema, rebatch


@pytest.mark.parametrize("name", ["in.csv", "in.csv.gz", "in.jsonl", "in.jsonl.gz", "in.parquet"])
def test_each_format_streams_in_exact_minibatches(tmp_path: Path, name: str) -> None:
    table = feature_table(250)
    path = write_table(table, tmp_path / name)
    [item] = list_inputs(str(path))
    assert item.format == name.split(".")[1]
    assert item.gzip == name.endswith(".gz")
    batches = list(iter_minibatches(item, 0, 64))
    assert [b.table.num_rows for b in batches] == [64, 64, 64, 58]
    assert [b.first_row for b in batches] == [0, 64, 128, 192]
    assert [b.index for b in batches] == [0, 1, 2, 3]
    rows = pa.concat_tables([b.table for b in batches])
    assert rows.column("id").to_pylist() == table.column("id").to_pylist()
    assert rows.column("f2").to_pylist() == pytest.approx(table.column("f2").to_pylist())
    assert rows.column("city").to_pylist() == table.column("city").to_pylist()
    assert read_schema(item).names == table.schema.names


def test_folder_is_expanded_sorted_skipping_hidden_and_unknown(tmp_path: Path) -> None:
    for name in ("b/x.parquet", "a.csv", "c.jsonl.gz", ".hidden.csv", "_skip/y.csv", "notes.txt"):
        if name.endswith(".txt"):
            (tmp_path / name).write_text("hello")
        else:
            write_table(feature_table(3), tmp_path / name)
    items = list_inputs(str(tmp_path))
    assert [i.relative for i in items] == ["a.csv", "b/x.parquet", "c.jsonl.gz"]


def test_unknown_format_and_missing_input_are_refused(tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("1,2")
    with pytest.raises(BatchError, match="cannot tell the format"):
        list_inputs(str(tmp_path / "data.txt"))
    with pytest.raises(BatchError, match="does not exist"):
        list_inputs(str(tmp_path / "nope.csv"))
    with pytest.raises(BatchError, match="holds no"):
        list_inputs(str(tmp_path))


def test_fsspec_urls_are_read(tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    local = write_table(feature_table(10), tmp_path / "in.csv")
    fs.pipe("/batchtest/in.csv", local.read_bytes())
    try:
        [item] = list_inputs("memory://batchtest")
        assert item.url == "memory://batchtest/in.csv"
        [batch] = list(iter_minibatches(item, 0, 100))
        assert batch.table.num_rows == 10
        assert fingerprint(item)["size"] == local.stat().st_size
    finally:
        fs.rm("/batchtest", recursive=True)


def test_fingerprint_sees_a_same_size_change(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"a\n1\n")
    [item] = list_inputs(str(path))
    before = fingerprint(item)
    path.write_bytes(b"a\n2\n")
    [item] = list_inputs(str(path))
    assert fingerprint(item)["sample_sha256"] != before["sample_sha256"]


def test_count_rows_only_for_parquet(tmp_path: Path) -> None:
    [parquet] = list_inputs(str(write_table(feature_table(42), tmp_path / "a.parquet")))
    [csv] = list_inputs(str(write_table(feature_table(42), tmp_path / "a.csv")))
    assert count_rows(parquet) == 42
    assert count_rows(csv) is None


def test_rebatch_cuts_across_batches() -> None:
    batches = [pa.record_batch({"x": list(range(n))}) for n in (3, 0, 5, 1)]
    assert [t.num_rows for t in rebatch(batches, 4)] == [4, 4, 1]


def test_a_broken_file_says_which(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"not parquet at all")
    [item] = list_inputs(str(path))
    with pytest.raises(BatchError, match="bad.parquet"):
        list(iter_minibatches(item, 0, 10))


def test_reading_parquet_holds_a_bounded_amount_of_memory_whatever_the_file_size(tmp_path: Path) -> None:
    """Arrow's allocations while streaming a Parquet file stay near one row group: pyarrow's default
    pre-buffering kept every row group read so far (274 MiB for a 229 MB file). (The CSV and JSON Lines
    readers read ahead a bounded number of 1 MiB blocks: about 35 MiB at most, measured on a 60 MiB file.)"""
    import numpy as np
    import pyarrow.parquet as pq

    rows, width = 1_200_000, 4
    values = np.random.default_rng(0).random((rows, width), dtype=np.float32)
    table = pa.table({f"c{i}": values[:, i] for i in range(width)})  # 19 MB of float32
    path = tmp_path / "big.parquet"
    pq.write_table(table, path, row_group_size=65_536)
    [item] = list_inputs(str(path))
    baseline = pa.total_allocated_bytes()
    peak, seen = 0, 0
    for batch in iter_minibatches(item, 0, 4_096):
        seen += batch.table.num_rows
        peak = max(peak, pa.total_allocated_bytes() - baseline)
    assert seen == rows
    assert peak < table.nbytes / 2, f"peak {peak / 2**20:.1f} MiB for a table of {table.nbytes / 2**20:.1f} MiB"


def test_rejected_rows_and_unparsed_lines_follow_their_rows_into_mini_batches() -> None:
    import pyarrow as pa

    from inferd.batch.readers import _Block, _rebatch_blocks

    def block(start: int, rows: int) -> pa.RecordBatch:
        return pa.RecordBatch.from_pydict({"v": list(range(start, start + rows))})

    blocks = [_Block(block(0, 5), [(1, "one"), (4, "four")], [(3, "short", "x")]),
              _Block(block(5, 0), [], [(9, "long", "y,y")]),  # a block of damaged lines only
              _Block(block(5, 2), [(0, "five")], []),
              _Block(block(7, 0), [], [(12, "last", "z")])]  # lines after the last row
    cut = list(_rebatch_blocks(blocks, 3))
    assert [t.column("v").to_pylist() for t, _, _ in cut] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [r for _, r, _ in cut] == [((1, "one"),), ((1, "four"), (2, "five")), ()]
    assert [[n for n, _, _ in u] for _, _, u in cut] == [[3], [9], [12]]
    # lines after the last row of a full mini-batch: one more mini-batch, of 0 rows, carries them
    cut = list(_rebatch_blocks([_Block(block(0, 3), [], []), _Block(block(3, 0), [], [(5, "last", "z")])], 3))
    assert [(t.num_rows, u) for t, _, u in cut] == [(3, ()), (0, ((5, "last", "z"),))]
