"""``inferd optimize`` on the demo ETA model: an ONNX version that passes the gate and serves; and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.csv as pc
import pyarrow.parquet as pq
import pytest
import skops.io as sio
import xgboost
from sklearn.kernel_ridge import KernelRidge

from cli_runner import inferd
from inferd.examples import digits, eta, spam
from inferd.examples.held_out import tables
from server_process import ServerProcess


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "eta" / "1").mkdir(parents=True)
    eta.build(root / "eta")
    return root


@pytest.fixture
def held_out(tmp_path: Path) -> Path:
    path = tmp_path / "eta.csv"
    pc.write_csv(pa.table(tables()["eta"]), path)
    return path


def test_eta_onnx_version_passes_the_gate_and_serves(repo, held_out, tmp_path):
    ran = inferd("optimize", str(repo), "eta", "--data", str(held_out), "--labels", "minutes", "--ignore", "id",
                 "--seconds", "0.2", "--json", "--report", str(tmp_path / "report"))
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    by_name = {c["name"]: c for c in report["candidates"]}
    assert by_name["onnx"]["passed"] is True
    assert by_name["onnx"]["agreement"]["max_abs_diff"] < 1e-3
    assert by_name["onnx"]["speed"]["latency_p50_us"] > 0
    assert by_name["onnx"]["speed"]["throughput_rows_s"] > 0
    assert report["chosen"] is not None
    assert report["written"] == str(repo / "eta" / "2")
    assert (repo / "eta" / "2" / "model.onnx").is_file()
    assert json.loads((repo / "eta" / "2" / "optimize.json").read_text())["chosen"] == report["chosen"]
    assert (tmp_path / "report" / "optimize.png").stat().st_size > 1000

    rows = tables()["eta"]
    x = np.column_stack([rows[n] for n in eta.FEATURES])[:8].astype(np.float32)
    expected = xgboost.Booster(model_file=str(repo / "eta" / "1" / "model.json")).inplace_predict(x)
    server = ServerProcess(repo, tmp_path / "server.log").start()  # serves the newest version: 2, the ONNX one
    try:
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
        response = httpx.post(f"{server.url}/v2/models/eta/versions/2/infer", json=body, timeout=30)
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(np.array(response.json()["outputs"][0]["data"]), expected, atol=1e-3)
        metadata = httpx.get(f"{server.url}/v2/models/eta/versions/2", timeout=30).json()
        assert metadata["platform"].startswith("onnx")
    finally:
        server.stop()


def test_spam_text_pipeline_converts_with_a_locale_the_image_has(tmp_path):
    root = tmp_path / "repo"
    (root / "spam" / "1").mkdir(parents=True)
    spam.build(root / "spam")
    data = tmp_path / "spam.jsonl"
    columns = tables()["spam"]
    data.write_text("".join(json.dumps({"text": t, "id": int(i), "label": y}) + "\n"
                            for t, i, y in zip(columns["text"], columns["id"], columns["label"], strict=True)))
    ran = inferd("optimize", str(root), "spam", "--data", str(data), "--labels", "label", "--ignore", "id",
                 "--dry-run", "--seconds", "0.05", "--json")
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    converted = next(c for c in report["candidates"] if c["name"] == "onnx")
    assert converted["error"] is None
    assert converted["passed"] is True
    assert converted["agreement"]["argmax_agreement"] == 1.0
    assert report["written"] is None  # --dry-run
    assert sorted(p.name for p in (root / "spam").iterdir()) == ["1"]


def test_columns_that_do_not_match_are_named_and_nothing_is_written(repo, tmp_path):
    data = tmp_path / "wrong.csv"
    pc.write_csv(pa.table({"distance_km": [1.0], "hour": [3.0], "minutes": [5.0]}), data)
    ran = inferd("optimize", str(repo), "eta", "--data", str(data), "--labels", "minutes")
    assert ran.returncode == 2
    assert "'distance_km'" in ran.stderr
    assert "'hour'" in ran.stderr
    assert "5 values per row" in ran.stderr
    assert not (repo / "eta" / "2").exists()


def test_labels_of_another_type(repo, held_out, tmp_path):
    data = tmp_path / "text.csv"
    columns = dict(tables()["eta"])
    columns["minutes"] = np.array([f"{v:.0f} min" for v in columns["minutes"]], dtype=object)
    pc.write_csv(pa.table({k: pa.array(v.tolist()) for k, v in columns.items()}), data)
    ran = inferd("optimize", str(repo), "eta", "--data", str(data), "--labels", "minutes", "--ignore", "id")
    assert ran.returncode == 2
    assert "not numbers" in ran.stderr
    assert not (repo / "eta" / "2").exists()


def test_a_model_the_converter_refuses_gives_its_reason_and_nothing_is_written(tmp_path):
    root = tmp_path / "repo"
    (root / "kernel" / "1").mkdir(parents=True)
    x = np.random.default_rng(0).random((40, 3)).astype(np.float32)
    sio.dump(KernelRidge().fit(x, x.sum(axis=1)), root / "kernel" / "1" / "model.skops")
    (root / "kernel" / "model.toml").write_text('[options]\ntrusted_types = ["sklearn.kernel_ridge.KernelRidge"]\n')
    data = tmp_path / "x.csv"
    pc.write_csv(pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2]}), data)
    ran = inferd("optimize", str(root), "kernel", "--data", str(data), "--json", "--seconds", "0.05")
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    converted = next(c for c in report["candidates"] if c["name"] == "onnx")
    assert "KernelRidge" in converted["error"]
    assert "cannot convert" in converted["error"]
    assert report["written"] is None
    assert sorted(p.name for p in (root / "kernel").iterdir()) == ["1", "model.toml"]


def test_a_bad_gate_is_refused(repo, held_out):
    ran = inferd("optimize", str(repo), "eta", "--data", str(held_out), "--labels", "minutes", "--ignore", "id",
                 "--max-accuracy-drop", "a lot")
    assert ran.returncode == 2
    assert "--max-accuracy-drop" in ran.stderr


def test_digits_onnx_gets_int8_candidates_and_slower_int8_is_said(tmp_path):
    root = tmp_path / "repo"
    (root / "digits" / "1").mkdir(parents=True)
    digits.build(root / "digits")
    data = tmp_path / "digits.parquet"
    pq.write_table(pa.table(tables()["digits"]), data)
    ran = inferd("optimize", str(root), "digits", "--data", str(data), "--labels", "digit", "--ignore", "id",
                 "--dry-run", "--seconds", "0.1", "--json")
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    by_name = {c["name"]: c for c in report["candidates"]}
    assert {"onnx+graph-optimized", "onnx+int8-dynamic", "onnx+int8-static"} <= set(by_name)
    fp32 = by_name["onnx+graph-optimized"]["speed"]["latency_p50_us"]
    for name in ("onnx+int8-dynamic", "onnx+int8-static"):
        candidate = by_name[name]
        assert candidate["error"] is None
        assert candidate["size_bytes"] < by_name["original"]["size_bytes"]
        assert candidate["agreement"]["argmax_agreement"] > 0.95
        said = any(note.startswith(f"{name} is slower than fp32") for note in report["notes"])
        assert said == (candidate["speed"]["latency_p50_us"] > fp32)
