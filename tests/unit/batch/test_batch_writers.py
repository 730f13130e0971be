"""The text formats of batch output print FP32 values (scalars and lists of them) in their shortest form, as
the FP32 values they are; FP64 values keep every digit, and Parquet keeps FP32."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from inferd.batch.writers import encode_part

SHORT = "0.99924076"
"""A float32 value, as its shortest decimal; widened to float64 it prints as 0.9992407560348511."""


def outputs() -> pa.Table:
    fp32 = np.array([float(SHORT), 0.1, 0.7, np.nan], dtype=np.float32)
    return pa.table({
        "id": [1, 2],
        "score": pa.array(fp32[:2]),
        "probabilities": pa.FixedSizeListArray.from_arrays(pa.array(fp32), 2),
        "ragged": pa.array([[fp32[0]], [fp32[1], fp32[2]]], type=pa.list_(pa.float32())),
        "total": pa.array([float(np.float32(SHORT)), 0.5]),  # FP64
    })


def test_csv_prints_fp32_in_its_shortest_form():
    assert encode_part(outputs(), "csv").decode().splitlines() == [
        f'1,{SHORT},"[{SHORT},0.1]","[{SHORT}]",0.9992407560348511',
        '2,0.1,"[0.7,null]","[0.1,0.7]",0.5',
    ]


def test_json_lines_print_fp32_in_its_shortest_form():
    assert encode_part(outputs(), "jsonl").decode().splitlines() == [
        f'{{"id":1,"score":{SHORT},"probabilities":[{SHORT},0.1],"ragged":[{SHORT}],"total":0.9992407560348511}}',
        '{"id":2,"score":0.1,"probabilities":[0.7,null],"ragged":[0.1,0.7],"total":0.5}',
    ]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_slice_of_a_batch_prints_its_own_rows(fmt):
    """Mini-batches are slices of larger tables: list offsets start where the slice does."""
    whole = encode_part(outputs(), fmt).decode().splitlines()
    assert encode_part(outputs().slice(1), fmt).decode().splitlines() == whole[1:]


def test_parquet_keeps_fp32():
    stream = pa.ipc.open_stream(encode_part(outputs(), "parquet")).read_all()
    assert stream.schema.field("score").type == pa.float32()
    assert stream.schema.field("probabilities").type == pa.list_(pa.float32(), 2)
