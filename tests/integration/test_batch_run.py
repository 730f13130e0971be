"""run_batch end to end in-process: formats, join, key, mapping, errors, threshold, retries, resume checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from batch_models import (
    FEATURES,
    FLAKY,
    PICKY,
    SLOW,
    feature_table,
    read_output,
    write_onnx_classifier,
    write_python_model,
    write_table,
)
from fakes import SHOUT, write_model
from inferd.batch import BatchError, BatchOptions, Progress, ThresholdError, run_batch

MAP = {"input": ",".join(FEATURES)}


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, Any]:
    root = tmp_path / "models"
    root.mkdir()
    model = write_onnx_classifier(root)
    write_python_model(root, "picky", PICKY)
    write_python_model(root, "flaky", FLAKY)
    write_python_model(root, "slow", SLOW)
    write_model(root, "shout", SHOUT)
    return root, model


def expected_labels(model: Any, table: pa.Table) -> list[int]:
    x = np.column_stack([table.column(f).to_numpy() for f in FEATURES]).astype(np.float32)
    return [int(v) for v in model.predict(x)]


@pytest.mark.parametrize(("name", "fmt", "out_name"), [
    ("in.csv", None, "in.csv"),
    ("in.jsonl.gz", None, "in.jsonl"),
    ("in.parquet", None, "in.parquet"),
    ("in.csv.gz", "parquet", "in.parquet"),
    ("in.parquet", "jsonl", "in.jsonl"),
    ("in.jsonl", "csv", "in.csv"),
])
def test_each_format_in_and_out_with_key(repo: tuple[Path, Any], tmp_path: Path, name: str, fmt: str | None,
                                         out_name: str) -> None:
    root, model = repo
    table = feature_table(300)
    source = write_table(table, tmp_path / "data" / name)
    summary = run_batch(root, "clf", source, tmp_path / "out",
                        BatchOptions(batch_size=64, key="id", mapping=MAP, output_format=fmt))
    assert (summary.rows_in, summary.rows_out, summary.rows_failed, summary.batches) == (300, 300, 0, 5)
    assert summary.outputs == [str(tmp_path / "out" / out_name)]
    out = read_output(tmp_path / "out" / out_name)
    assert out.column_names == ["id", "label", "probabilities"]
    assert out.column("id").to_pylist() == table.column("id").to_pylist()
    assert out.column("label").to_pylist() == expected_labels(model, table)
    probabilities = out.column("probabilities").to_pylist()
    if isinstance(probabilities[0], str):  # CSV holds lists as JSON text
        probabilities = [json.loads(p) for p in probabilities]
    assert np.allclose(np.array(probabilities).sum(axis=1), 1.0, atol=1e-5)
    saved = json.loads((tmp_path / "out" / "_summary.json").read_text())
    assert saved["rows_out"] == 300
    assert not (tmp_path / "out" / "_errors.jsonl").exists()


def test_join_appends_predictions_to_the_input_columns(repo: tuple[Path, Any], tmp_path: Path) -> None:
    root, model = repo
    table = feature_table(100)
    source = write_table(table, tmp_path / "in.parquet")
    run_batch(root, "clf", source, tmp_path / "out", BatchOptions(batch_size=32, join=True, mapping=MAP))
    out = read_output(tmp_path / "out" / "in.parquet")
    assert out.column_names == [*table.column_names, "label", "probabilities"]
    assert out.select(table.column_names).equals(table)
    assert out.column("label").to_pylist() == expected_labels(model, table)


def test_a_model_with_one_input_takes_all_feature_columns(repo: tuple[Path, Any], tmp_path: Path) -> None:
    root, model = repo
    table = feature_table(50).drop_columns(["city"])
    source = write_table(table, tmp_path / "in.csv")
    run_batch(root, "clf", source, tmp_path / "out", BatchOptions(key="id"))
    assert read_output(tmp_path / "out" / "in.csv").column("label").to_pylist() == expected_labels(model, table)


def test_text_columns_feed_bytes_inputs(repo: tuple[Path, Any], tmp_path: Path) -> None:
    root, _ = repo
    source = write_table(pa.table({"id": [1, 2, 3], "msg": ["hi", "olá", "yo"]}), tmp_path / "in.jsonl")
    run_batch(root, "shout", source, tmp_path / "out", BatchOptions(key="id", mapping={"text": "msg"}))
    lines = (tmp_path / "out" / "in.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [{"id": 1, "upper": "HI"}, {"id": 2, "upper": "OLÁ"},
                                                    {"id": 3, "upper": "YO"}]


def bad_rows(table: pa.Table) -> list[int]:
    return [i for i, v in enumerate(table.column("f0").to_pylist()) if v < -1.5]


def test_bad_records_go_to_the_errors_file_and_good_ones_still_score(repo: tuple[Path, Any],
                                                                      tmp_path: Path) -> None:
    root, _ = repo
    table = feature_table(400, seed=3)
    bad = bad_rows(table)
    assert 3 <= len(bad) < 60
    source = write_table(table, tmp_path / "in.csv")
    summary = run_batch(root, "picky", source, tmp_path / "out", BatchOptions(batch_size=50, key="id", mapping=MAP))
    assert (summary.rows_in, summary.rows_failed, summary.rows_out) == (400, len(bad), 400 - len(bad))
    out = read_output(tmp_path / "out" / "in.csv")
    good_ids = [v for i, v in enumerate(table.column("id").to_pylist()) if i not in bad]
    assert out.column("id").to_pylist() == good_ids
    errors = [json.loads(line) for line in (tmp_path / "out" / "_errors.jsonl").read_text().splitlines()]
    assert [e["row"] for e in errors] == bad
    assert [e["key"] for e in errors] == [1000 + i for i in bad]
    assert all(e["code"] == "INTERNAL" and "f0 below -1.5" in e["error"] for e in errors)
    assert errors[0]["record"]["city"] == table.column("city")[bad[0]].as_py()
    assert summary.errors_file == str(tmp_path / "out" / "_errors.jsonl")


@pytest.mark.parametrize("max_errors", [2, 0.005])
def test_the_error_threshold_fails_the_job_and_says_so(repo: tuple[Path, Any], tmp_path: Path,
                                                        max_errors: float) -> None:
    root, _ = repo
    table = feature_table(400, seed=3)
    source = write_table(table, tmp_path / "in.parquet")
    with pytest.raises(ThresholdError, match="error threshold was exceeded") as caught:
        run_batch(root, "picky", source, tmp_path / "out",
                  BatchOptions(batch_size=50, mapping=MAP, max_errors=max_errors, concurrency=1))
    assert caught.value.summary.state == "failed"
    assert caught.value.summary.rows_failed > 2
    assert not (tmp_path / "out" / "in.parquet").exists()
    assert (tmp_path / "out" / "_errors.jsonl").read_text().count("\n") == caught.value.summary.rows_failed
    # Allowing enough errors, the same job resumes and completes.
    allowed = len(bad_rows(table))
    summary = run_batch(root, "picky", source, tmp_path / "out", BatchOptions(batch_size=50, mapping=MAP,
                                                                               max_errors=allowed))
    assert summary.rows_failed == allowed
    assert summary.resumed_batches > 0


def test_transient_failures_are_retried(repo: tuple[Path, Any], tmp_path: Path) -> None:
    root, _ = repo
    source = write_table(feature_table(60), tmp_path / "in.csv")
    ok = run_batch(root, "flaky", source, tmp_path / "ok", BatchOptions(batch_size=20, mapping=MAP, retries=1,
                                                                        concurrency=1))
    assert ok.rows_failed == 0
    failed = run_batch(root, "flaky", source, tmp_path / "failed", BatchOptions(batch_size=20, mapping=MAP,
                                                                                retries=0, concurrency=1))
    assert failed.rows_failed > 0
    codes = {json.loads(line)["code"] for line in (tmp_path / "failed" / "_errors.jsonl").read_text().splitlines()}
    assert codes == {"UNAVAILABLE"}


def test_a_minibatch_over_its_timeout_fails_whole(repo: tuple[Path, Any], tmp_path: Path) -> None:
    root, _ = repo
    source = write_table(feature_table(40), tmp_path / "in.csv")
    summary = run_batch(root, "slow", source, tmp_path / "out",
                        BatchOptions(batch_size=20, mapping=MAP, timeout_s=0.005, retries=0))
    assert summary.rows_failed == 40
    first = json.loads((tmp_path / "out" / "_errors.jsonl").read_text().splitlines()[0])
    assert first["code"] == "DEADLINE_EXCEEDED"
    assert "timeout of 0.005 s" in first["error"]


def test_a_changed_input_or_model_is_refused_unless_restarted(repo: tuple[Path, Any], tmp_path: Path) -> None:
    root, _ = repo
    source = write_table(feature_table(100), tmp_path / "in.csv")
    options = BatchOptions(batch_size=30, mapping=MAP)
    run_batch(root, "clf", source, tmp_path / "out", options)
    write_table(feature_table(120), source)
    with pytest.raises(BatchError, match=r"input file in.csv changed \(size.*--restart"):
        run_batch(root, "clf", source, tmp_path / "out", options)
    summary = run_batch(root, "clf", source, tmp_path / "out", BatchOptions(batch_size=30, mapping=MAP, restart=True))
    assert summary.rows_out == 120
    write_onnx_classifier(root, "clf2")
    (root / "clf" / "1" / "model.onnx").write_bytes((root / "clf2" / "1" / "model.onnx").read_bytes())
    with pytest.raises(BatchError, match="the model changed"):
        run_batch(root, "clf", source, tmp_path / "out", options)
    with pytest.raises(BatchError, match="option batch_size was 30, now 31"):
        run_batch(root, "clf", source, tmp_path / "out", BatchOptions(batch_size=31, mapping=MAP))


def test_running_a_finished_job_again_changes_nothing(repo: tuple[Path, Any], tmp_path: Path) -> None:
    root, _ = repo
    source = write_table(feature_table(100), tmp_path / "in.parquet")
    options = BatchOptions(batch_size=30, mapping=MAP)
    first = run_batch(root, "clf", source, tmp_path / "out", options)
    data = (tmp_path / "out" / "in.parquet").read_bytes()
    again = run_batch(root, "clf", source, tmp_path / "out", options)
    assert (again.rows_out, again.resumed_batches) == (first.rows_out, first.batches)
    assert (tmp_path / "out" / "in.parquet").read_bytes() == data


def test_folder_input_and_progress(repo: tuple[Path, Any], tmp_path: Path) -> None:
    root, _ = repo
    write_table(feature_table(70), tmp_path / "data" / "a.parquet")
    write_table(feature_table(50, seed=1), tmp_path / "data" / "sub" / "b.parquet")
    seen: list[Progress] = []
    summary = run_batch(root, "clf", tmp_path / "data", tmp_path / "out", BatchOptions(batch_size=16, mapping=MAP),
                        on_progress=seen.append)
    assert summary.rows_out == 120
    assert (tmp_path / "out" / "sub" / "b.parquet").exists()
    assert seen[-1].rows_done == 120
    assert seen[-1].rows_total == 120
    assert not seen[-1].total_is_estimate
    assert {p.rows_total for p in seen} == {120}


def test_setup_problems_are_batch_errors(repo: tuple[Path, Any], tmp_path: Path) -> None:
    root, _ = repo
    source = write_table(feature_table(10), tmp_path / "in.csv")
    with pytest.raises(BatchError, match="no model 'nope'"):
        run_batch(root, "nope", source, tmp_path / "out")
    with pytest.raises(BatchError, match="exceeds model 'clf'.s max_batch_size"):
        run_batch(root, "clf", source, tmp_path / "out", BatchOptions(batch_size=100_000, mapping=MAP))
    with pytest.raises(BatchError, match="takes 4 values per row"):
        run_batch(root, "clf", source, tmp_path / "out")
