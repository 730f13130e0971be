"""``inferd batch run`` as a user runs it: a real subprocess, killed with SIGKILL and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pytest

from batch_models import FEATURES, SLOW, feature_table, write_python_model, write_table
from cli_runner import BIN, cli_env, inferd

MAP = "input=" + ",".join(FEATURES)


def journaled_batches(output: Path) -> int:
    journal = output / ".inferd-batch" / "journal.jsonl"
    if not journal.exists():
        return 0
    return sum(1 for line in journal.read_text().splitlines() if '"batch":' in line and line.endswith("}"))


def test_kill_9_then_resume_gives_byte_identical_output(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_python_model(root, "slow", SLOW)  # 40 ms per mini-batch
    data = tmp_path / "data"
    write_table(feature_table(500, seed=1), data / "a.csv")
    write_table(feature_table(400, seed=2), data / "b.jsonl.gz")
    write_table(feature_table(300, seed=3), data / "c.parquet")
    args = ["batch", "run", str(root), "slow", "--input", str(data), "--batch-size", "25", "--key", "id",
            "--join", "--map", MAP]
    batches = 20 + 16 + 12

    straight = inferd(*args, "--output", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr

    killed_out = tmp_path / "killed"
    process = subprocess.Popen([str(BIN / "inferd"), *args, "--output", str(killed_out)], env=cli_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while journaled_batches(killed_out) < 8:
            assert process.poll() is None, "the job ended before it could be killed"
            assert time.monotonic() < deadline, "no progress in the journal"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    done_at_kill = journaled_batches(killed_out)
    assert 8 <= done_at_kill < batches
    assert not (killed_out / "a.csv").exists()

    resumed = inferd(*args, "--output", str(killed_out))
    assert resumed.returncode == 0, resumed.stderr
    assert f"({done_at_kill} from an earlier run)" in resumed.stdout
    for name in ("a.csv", "b.jsonl", "c.parquet"):
        assert (killed_out / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name
    summary = json.loads((killed_out / "_summary.json").read_text())
    assert (summary["rows_in"], summary["rows_out"], summary["rows_failed"]) == (1200, 1200, 0)
    assert summary["resumed_batches"] == done_at_kill
    assert sorted(p.name for p in killed_out.iterdir()) == [".inferd-batch", "_summary.json", "a.csv", "b.jsonl",
                                                            "c.parquet"]


def test_changed_input_is_refused_on_resume(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_python_model(root, "slow", SLOW)
    source = write_table(feature_table(60), tmp_path / "in.csv")
    args = ["batch", "run", str(root), "slow", "-i", str(source), "-o", str(tmp_path / "out"), "--map", MAP,
            "--batch-size", "30"]
    assert inferd(*args).returncode == 0
    write_table(feature_table(61), source)
    refused = inferd(*args)
    assert refused.returncode == 1
    assert "input file in.csv changed (size" in " ".join(refused.stderr.split())
    assert "--restart" in refused.stderr
    restarted = inferd(*args, "--restart")
    assert restarted.returncode == 0, restarted.stderr
    assert "61" in restarted.stdout


@pytest.mark.parametrize(("extra", "message"), [
    (["--max-errors", "abc"], "--max-errors"),
    (["--map", "nonsense"], "--map takes INPUT=COLUMN"),
    (["--batch-size", "0"], "batch_size must be a positive integer"),
])
def test_bad_options_exit_2(tmp_path: Path, extra: list[str], message: str) -> None:
    source = write_table(feature_table(5), tmp_path / "in.csv")
    result = inferd("batch", "run", str(tmp_path), "m", "-i", str(source), "-o", str(tmp_path / "out"), *extra)
    assert result.returncode == 2
    assert message in result.stderr


def test_threshold_exits_1_with_summary(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_python_model(root, "slow", SLOW)
    table = feature_table(20).drop_columns(["city"])
    f1 = [str(v) for v in table.column("f1").to_pylist()]
    f1[13] = "oops"  # one record whose f1 is not a number: the column reads as text, that record fails
    source = write_table(table.set_column(2, "f1", pa.array(f1)), tmp_path / "in.csv")
    result = inferd("batch", "run", str(root), "slow", "-i", str(source), "-o", str(tmp_path / "out"),
                    "--map", MAP, "--max-errors", "0", "--batch-size", "10")
    assert result.returncode == 1, result.stderr
    assert "error threshold was exceeded" in " ".join(result.stderr.split())
    assert "rows failed" in result.stdout
    [error] = [json.loads(line) for line in (tmp_path / "out" / "_errors.jsonl").read_text().splitlines()]
    assert error["row"] == 13
    assert error["code"] == "INVALID_ARGUMENT"
    assert "column 'f1' does not fit model input 'input'" in error["error"]


def one_bad_record(tmp_path: Path) -> tuple[Path, Path]:
    """A repository with the slow model and a CSV of 20 records whose record 13 fails (its f1 is text)."""
    root = tmp_path / "models"
    write_python_model(root, "slow", SLOW)
    table = feature_table(20).drop_columns(["city"])
    f1 = [str(v) for v in table.column("f1").to_pylist()]
    f1[13] = "oops"
    return root, write_table(table.set_column(2, "f1", pa.array(f1)), tmp_path / "in.csv")


def test_failed_records_are_counted_in_the_last_line(tmp_path: Path) -> None:
    root, source = one_bad_record(tmp_path)
    out = tmp_path / "out"
    result = inferd("batch", "run", str(root), "slow", "-i", str(source), "-o", str(out), "--map", MAP)
    assert result.returncode == 0, result.stderr  # no --max-errors: failed records do not fail the job
    assert result.stdout.splitlines()[-1] == (
        f"batch job succeeded with 1 row failed (19 of 20 rows scored): see {out / '_errors.jsonl'}; "
        "--max-errors 0 makes any failed row fail the job")
    clean = inferd("batch", "run", str(root), "slow", "-i", str(source), "-o", str(tmp_path / "clean"),
                   "--map", MAP.replace("f1", "f0"))
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.splitlines()[-1] == "batch job succeeded: 20 of 20 rows scored"


@pytest.mark.parametrize(("args", "message"), [
    (["-i", "{tmp}/none.csv"], "input {tmp}/none.csv does not exist"),
    (["-i", "{tmp}/in.csv", "--map", "input=f0,f1,f2,nope"], "column 'nope'"),
    (["-i", "{tmp}/in.csv", "--version", "7"], "model 'slow' has no version 7"),
])
def test_a_job_that_cannot_start_prints_its_error_alone(tmp_path: Path, args: list[str], message: str) -> None:
    """The progress bar appears once the job is checked: an error found before it is all that stderr shows."""
    root, _ = one_bad_record(tmp_path)
    given = [a.format(tmp=tmp_path) for a in args]
    result = inferd("batch", "run", str(root), "slow", "-o", str(tmp_path / "out"), *given)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ")
    assert message.format(tmp=tmp_path) in line


def test_a_damaged_csv_resumed_after_kill_9_gives_byte_identical_output_and_errors(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_python_model(root, "slow", SLOW)  # 40 ms per mini-batch
    source = write_table(feature_table(500, seed=7), tmp_path / "data" / "a.csv")
    lines = source.read_text().splitlines()
    for row in (3, 90, 260, 410):
        lines[row + 1] = lines[row + 1].rsplit(",", 1)[0]  # a field short
    for row in (40, 300, 499):
        fields = lines[row + 1].split(",")
        fields[3] = "n/a?"  # f2: not a number
        lines[row + 1] = ",".join(fields)
    source.write_text("\n".join(lines) + "\n")
    args = ["batch", "run", str(root), "slow", "--input", str(source), "--batch-size", "20", "--key", "id",
            "--join", "--map", MAP]

    straight = inferd(*args, "--output", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    killed_out = tmp_path / "killed"
    process = subprocess.Popen([str(BIN / "inferd"), *args, "--output", str(killed_out)], env=cli_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while journaled_batches(killed_out) < 6:
            assert process.poll() is None, "the job ended before it could be killed"
            assert time.monotonic() < deadline, "no progress in the journal"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    assert journaled_batches(killed_out) < 25
    resumed = inferd(*args, "--output", str(killed_out))
    assert resumed.returncode == 0, resumed.stderr
    for name in ("a.csv", "_errors.jsonl"):
        assert (killed_out / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name
    summary = json.loads((killed_out / "_summary.json").read_text())
    assert (summary["rows_in"], summary["rows_out"], summary["rows_failed"]) == (500, 493, 7)
    errors = [json.loads(line) for line in (killed_out / "_errors.jsonl").read_text().splitlines()]
    assert sorted(e.get("line", -1) for e in errors if "line" in e) == [5, 92, 262, 412]
