"""Batch jobs over damaged files: a CSV line with the wrong number of fields, a value that does not fit its
column after the first block Arrow infers the types from, values no JSON request could carry (NaN, infinities,
FP32 overflow). Each fails its own record, into the errors file; the job goes on, under the error threshold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from batch_models import FEATURES, SLOW, feature_table, read_output, write_python_model
from fakes import ADDER, write_model
from inferd.batch import BatchOptions, ThresholdError, run_batch
from inferd.batch.readers import BLOCK_BYTES

MAP = {"input": ",".join(FEATURES)}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    write_python_model(models, "slow", SLOW.replace("time.sleep(0.04)", "pass"))
    write_model(models, "echo", """
class Model:
    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, -1]}]
    outputs = [{"name": "y", "datatype": "FP32", "shape": [-1, -1]}]

    def predict(self, inputs):
        return {"y": inputs["x"]}
""")
    write_model(models, "adder", ADDER)
    return models


def errors_of(output: Path) -> list[dict[str, Any]]:
    path = output / "_errors.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def csv_lines(table: pa.Table) -> list[str]:
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink)
    return sink.getvalue().to_pybytes().decode().splitlines()


def test_a_line_with_the_wrong_number_of_fields_fails_alone(root: Path, tmp_path: Path) -> None:
    table = feature_table(300, seed=4)
    lines = csv_lines(table)
    lines[11] = lines[11].rsplit(",", 2)[0]  # row 10: two fields short
    lines[201] += ",extra"  # row 200: one too many
    source = tmp_path / "in.csv"
    source.write_text("\n".join(lines) + "\n")
    summary = run_batch(root, "slow", source, tmp_path / "out", BatchOptions(batch_size=64, key="id", mapping=MAP))
    assert (summary.state, summary.rows_in, summary.rows_failed, summary.rows_out) == ("succeeded", 300, 2, 298)
    errors = errors_of(tmp_path / "out")
    assert [(e["line"], e["code"]) for e in errors] == [(12, "INVALID_ARGUMENT"), (202, "INVALID_ARGUMENT")]
    assert errors[0]["record"] == lines[11]
    assert "the line has 4 field(s), the file's header 6" in errors[0]["error"]
    out = read_output(tmp_path / "out" / "in.csv")
    assert out.column("id").to_pylist() == [1000 + i for i in range(300) if i not in (10, 200)]


def big_csv(tmp_path: Path, rows: int) -> tuple[Path, list[str]]:
    lines = csv_lines(feature_table(rows, seed=5))
    assert len("\n".join(lines)) > 2 * BLOCK_BYTES
    return tmp_path / "big.csv", lines


def test_a_value_that_does_not_fit_its_column_after_the_first_block_fails_alone(root: Path,
                                                                               tmp_path: Path) -> None:
    source, lines = big_csv(tmp_path, 30_000)
    late = 25_000  # well past the first MiB, from which Arrow infers the column types
    fields = lines[late + 1].split(",")
    fields[2] = "abc"  # f1
    lines[late + 1] = ",".join(fields)
    source.write_text("\n".join(lines) + "\n")
    summary = run_batch(root, "slow", source, tmp_path / "out", BatchOptions(batch_size=1000, key="id", mapping=MAP,
                                                                               join=True))
    assert (summary.rows_in, summary.rows_failed, summary.rows_out) == (30_000, 1, 29_999)
    [error] = errors_of(tmp_path / "out")
    assert (error["row"], error["key"], error["code"]) == (late, 1000 + late, "INVALID_ARGUMENT")
    assert "column 'f1': 'abc' does not fit the column's type double" in error["error"]
    assert error["record"]["f1"] is None
    out = read_output(tmp_path / "out" / "big.csv")
    assert out.num_rows == 29_999
    assert out.schema.field("f1").type == pa.float64()  # the types of the first block, as before


def test_the_error_threshold_still_applies_to_damaged_lines(root: Path, tmp_path: Path) -> None:
    lines = csv_lines(feature_table(100, seed=6))
    for row in (5, 50, 90):
        lines[row + 1] = "garbage"
    source = tmp_path / "in.csv"
    source.write_text("\n".join(lines) + "\n")
    with pytest.raises(ThresholdError, match="3 record\\(s\\) failed") as caught:
        run_batch(root, "slow", source, tmp_path / "out", BatchOptions(batch_size=20, mapping=MAP, max_errors=2))
    assert caught.value.summary.rows_failed == 3
    assert not (tmp_path / "out" / "in.csv").exists()
    summary = run_batch(root, "slow", source, tmp_path / "out", BatchOptions(batch_size=20, mapping=MAP,
                                                                               max_errors=3))
    assert (summary.rows_in, summary.rows_failed) == (100, 3)


def test_damaged_lines_go_with_the_mini_batch_being_read(root: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("a,b\n" + "".join(f"{i},{i}\n" for i in range(3)) + "1,2,3\n4\n")
    summary = run_batch(root, "slow", source, tmp_path / "out", BatchOptions(batch_size=3, mapping={"input": "a,b,a,b"}))
    assert (summary.rows_in, summary.rows_failed, summary.rows_out, summary.batches) == (5, 2, 3, 1)
    assert [e["line"] for e in errors_of(tmp_path / "out")] == [5, 6]


@pytest.mark.parametrize("model", ["slow", "echo"])
def test_a_file_of_damaged_lines_only_scores_an_empty_mini_batch(root: Path, tmp_path: Path, model: str) -> None:
    """Its one mini-batch has 0 rows: it goes through the DataPlane as an empty batch (answered with 0 rows by a
    model whose output shape after the batch is fixed, 400 by one whose is free), and the job still ends."""
    source = tmp_path / "in.csv"
    source.write_text("a,b,c,d\n1,2\n3\n")
    mapping = {"input": "a,b,c,d"} if model == "slow" else {"x": "a,b,c,d"}
    summary = run_batch(root, model, source, tmp_path / "out", BatchOptions(batch_size=3, mapping=mapping))
    assert (summary.state, summary.rows_in, summary.rows_failed, summary.rows_out) == ("succeeded", 2, 2, 0)
    assert [e["line"] for e in errors_of(tmp_path / "out")] == [2, 3]
    assert read_output(tmp_path / "out" / "in.csv").num_rows == 0


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_values_no_json_request_could_carry_fail_their_records(root: Path, tmp_path: Path, fmt: str) -> None:
    """What real-time refuses (tensors.check_finite): a number past FP32's range, NaN and the infinities, as each
    format spells them (Arrow's CSV reader takes "NaN" for a null but "NAN" for NaN, and "1e400" for inf)."""
    spelled = {"csv": ("NAN", "1e400"), "jsonl": ("NaN", "Infinity")}
    values: list[Any] = [1.0, 3.5e38, "nan", 2.0, "inf", -3.5e38, 4.0]
    if fmt == "parquet":
        source = tmp_path / "in.parquet"
        floats = [float(v) for v in values]
        pq.write_table(pa.table({"id": range(7), "x0": floats, "x1": [0.5] * 7}), source)
    else:
        nan, inf = spelled[fmt]
        text = [nan if v == "nan" else inf if v == "inf" else repr(v) for v in values]
        source = tmp_path / f"in.{fmt}"
        if fmt == "csv":
            source.write_text("id,x0,x1\n" + "".join(f"{i},{t},0.5\n" for i, t in enumerate(text)))
        else:
            source.write_text("".join(f'{{"id": {i}, "x0": {t}, "x1": 0.5}}\n' for i, t in enumerate(text)))
    summary = run_batch(root, "echo", source, tmp_path / "out",
                        BatchOptions(batch_size=4, key="id", mapping={"x": "x0,x1"}))
    errors = {e["key"]: (e["code"], e["error"]) for e in errors_of(tmp_path / "out")}
    assert sorted(errors) == [1, 2, 4, 5]
    assert all(code == "INVALID_ARGUMENT" for code, _ in errors.values())
    assert "input 'x': a value is outside the range of FP32" in errors[1][1]
    assert "input 'x': a value is outside the range of FP32" in errors[5][1]
    assert "input 'x': a value is not a finite number (nan)" in errors[2][1]
    assert "input 'x': a value is not a finite number (inf)" in errors[4][1]
    assert summary.rows_out == 3
    assert read_output(tmp_path / "out" / source.name).column("id").to_pylist() == [0, 3, 6]
