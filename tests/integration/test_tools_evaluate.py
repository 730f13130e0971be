"""``inferd evaluate`` on what ``inferd batch run`` writes for the demo digits model, and on bad input."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pc
import pytest

from cli_runner import inferd
from inferd.examples import digits
from inferd.examples.held_out import tables

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The digits model, its held-out rows scored by ``inferd batch run`` (CSV output, list column as JSON text),
    and the labels in a file of their own, in reverse order (joined on the key)."""
    root = tmp_path_factory.mktemp("evaluate")
    (root / "repo" / "digits" / "1").mkdir(parents=True)
    digits.build(root / "repo" / "digits")
    columns = tables()["digits"]
    features = {k: v for k, v in columns.items() if k != "digit"}
    pc.write_csv(pa.table(features), root / "features.csv")
    pc.write_csv(pa.table({"id": columns["id"][::-1], "digit": columns["digit"][::-1]}), root / "labels.csv")
    ran = inferd("batch", "run", str(root / "repo"), "digits", "--input", str(root / "features.csv"),
                 "--output", str(root / "preds"), "--key", "id")
    assert ran.returncode == 0, ran.stderr
    return {"root": root, "preds": root / "preds", "labels": root / "labels.csv"}


def test_digits_accuracy_matches_scikit_learn(scored):
    x_train, x_test, y_train, y_test = digits.load_split()
    expected = digits.train(x_train, y_train).score(x_test, y_test)
    report = scored["root"] / "report"
    ran = inferd("evaluate", str(scored["preds"]), "--labels", str(scored["labels"]), "--key", "id",
                 "--task", "classification", "--json", "--report", str(report))
    assert ran.returncode == 0, ran.stderr
    found = json.loads(ran.stdout)
    assert abs(found["metrics"]["accuracy"] - expected) < 0.001
    assert found["rows"] == len(y_test)
    assert {"macro_f1", "roc_auc", "log_loss"} <= set(found["metrics"])
    assert len(found["per_class"]) == 10
    assert len(found["confusion"]) == 10
    png = report / "confusion.png"
    header = png.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert width >= 300
    assert height >= 300
    html = (report / "evaluation.html").read_text()
    assert "data:image/png;base64," in html
    assert "http://" not in html
    assert "https://" not in html


def test_html_report_renders_in_headless_chromium(scored, tmp_path):
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("chromium is missing under CI: install the chromium Debian package")
        pytest.skip("/usr/bin/chromium is not installed (apt-get install chromium)")
    report = tmp_path / "report"
    ran = inferd("evaluate", str(scored["preds"]), "--labels", str(scored["labels"]), "--key", "id",
                 "--task", "classification", "--report", str(report))
    assert ran.returncode == 0, ran.stderr
    shot = tmp_path / "shot.png"
    subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                    "--window-size=1000,1400", (report / "evaluation.html").as_uri()],
                   capture_output=True, timeout=120, check=False)
    assert shot.exists()
    assert shot.stat().st_size > 10_000
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def test_fail_under_exits_non_zero(scored):
    args = ["evaluate", str(scored["preds"]), "--labels", str(scored["labels"]), "--key", "id",
            "--task", "classification"]
    assert inferd(*args, "--fail-under", "accuracy=0.5").returncode == 0
    failed = inferd(*args, "--fail-under", "accuracy=0.999")
    assert failed.returncode == 1
    assert "accuracy" in failed.stderr
    assert "under 0.999" in failed.stderr
    wrong_way = inferd(*args, "--fail-under", "log_loss=0.1")
    assert wrong_way.returncode == 2
    assert "--fail-over" in wrong_way.stderr


def test_labels_of_another_length(scored, tmp_path):
    short = tmp_path / "short.csv"
    pc.write_csv(pa.table({"digit": list(range(10))}), short)
    ran = inferd("evaluate", str(scored["preds"]), "--labels", str(short), "--task", "classification")
    assert ran.returncode == 2
    assert "10 rows" in ran.stderr
    assert "--key" in ran.stderr


def test_labels_of_another_type(scored, tmp_path):
    words = tmp_path / "words.csv"
    columns = tables()["digits"]
    pc.write_csv(pa.table({"id": columns["id"], "digit": [f"d{v}" for v in columns["digit"]]}), words)
    ran = inferd("evaluate", str(scored["preds"]), "--labels", str(words), "--key", "id",
                 "--task", "classification")
    assert ran.returncode == 2
    assert "text" in ran.stderr
    assert "numbers" in ran.stderr


def test_regression_labels_that_are_text(tmp_path):
    table = tmp_path / "p.jsonl"
    table.write_text('{"prediction": 1.5, "truth": "a"}\n{"prediction": 2.5, "truth": "b"}\n')
    ran = inferd("evaluate", str(table), "--labels", "truth", "--task", "regression")
    assert ran.returncode == 2
    assert "must be numbers" in ran.stderr


def test_regression_and_slices_from_columns(tmp_path):
    table = tmp_path / "p.parquet"
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prediction": [1.0, 2.0, 3.0, 5.0], "y": [1.0, 2.5, 2.5, 5.0],
                             "city": ["a", "a", "b", "b"]}), table)
    ran = inferd("evaluate", str(table), "--labels", "y", "--task", "regression", "--slice", "city", "--json")
    assert ran.returncode == 0, ran.stderr
    found = json.loads(ran.stdout)
    assert found["metrics"]["mae"] == pytest.approx(0.25)
    assert set(found["slices"]) == {"a", "b"}
    assert found["slices"]["a"]["metrics"]["mae"] == pytest.approx(0.25)


def test_unknown_labels_column_names_the_columns(scored):
    ran = inferd("evaluate", str(scored["preds"]), "--labels", "nope", "--task", "classification")
    assert ran.returncode == 2
    assert "'label'" in ran.stderr
    assert "'probabilities'" in ran.stderr
