"""Damaged XGBoost and LightGBM files served by a real ``inferd serve`` next to healthy models: each damaged
model fails alone (UNAVAILABLE with the reason, in-process and in worker processes alike), and the server and
its healthy models keep answering. Before the structure checks, the LightGBM files aborted the server at
start-up and the XGBoost one segfaulted it on its first inference."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from damaged_models import damage_lightgbm, damage_xgboost
from fakes import ADDER, write_model
from server_process import ServerProcess

xgb = pytest.importorskip("xgboost")
lgb = pytest.importorskip("lightgbm")

X = np.random.default_rng(0).uniform(-3, 3, size=(200, 4)).astype(np.float32)
PROCESS = '[instances]\nkind = "process"\n'
DAMAGED = {  # model name: (runtime, damage, model.toml)
    "xgb-child-out-of-range": ("xgboost", "left-child-out-of-range", None),
    "xgb-child-out-of-range-process": ("xgboost", "left-child-out-of-range", PROCESS),
    "xgb-split-on-missing-feature": ("xgboost", "split-on-missing-feature", None),
    "lgb-num-leaves-changed": ("lightgbm", "num-leaves-changed", None),
    "lgb-num-leaves-changed-process": ("lightgbm", "num-leaves-changed", PROCESS),
    "lgb-child-loops-to-root": ("lightgbm", "child-loops-to-root", None),
    "lgb-not-a-number": ("lightgbm", "not-a-number", None),
}


def _write_repository(root: Path) -> None:
    xgb_model = xgb.XGBRegressor(n_estimators=8, max_depth=4, n_jobs=1).fit(X, X[:, 0] * 2 + X[:, 1])
    lgb_model = lgb.LGBMRegressor(n_estimators=8, num_leaves=8, min_child_samples=3, n_jobs=1, verbose=-1) \
        .fit(X, X[:, 0] - X[:, 2])
    for name, save, filename in (("xgb-good", xgb_model.get_booster().save_model, "model.json"),
                                 ("lgb-good", lgb_model.booster_.save_model, "model.txt")):
        (root / name / "1").mkdir(parents=True)
        save(str(root / name / "1" / filename))
    for name, (runtime, damage, toml) in DAMAGED.items():
        folder = root / name / "1"
        folder.mkdir(parents=True)
        if runtime == "xgboost":
            damage_xgboost(root / "xgb-good" / "1" / "model.json", folder / "model.json", damage)
        else:
            damage_lightgbm(root / "lgb-good" / "1" / "model.txt", folder / "model.txt", damage)
        if toml:
            (root / name / "model.toml").write_text(toml)
    write_model(root, "adder", ADDER)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("damaged") / "models"
    root.mkdir()
    _write_repository(root)
    process = ServerProcess(root, root.parent / "serve.log", env={"INFERD_STRICT_READINESS": "false"})
    yield from process.serving(timeout=120)


def _infer(server: ServerProcess, model: str, rows: np.ndarray) -> httpx.Response:
    body: dict[str, Any] = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(rows.shape),
                                        "data": rows.ravel().tolist()}]}
    return httpx.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=30)


def test_each_damaged_model_is_unavailable_with_its_reason(server: ServerProcess) -> None:
    index = {row["name"]: row for row in httpx.post(f"{server.url}/v2/repository/index", timeout=10).json()}
    for name in DAMAGED:
        assert index[name]["state"] == "UNAVAILABLE", index[name]
        reason = index[name]["reason"]
        assert "not a valid" in reason, reason
        assert "model.json" in reason or "model.txt" in reason, reason
        ready = httpx.get(f"{server.url}/v2/models/{name}/ready", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["ready"] is False
        answer = _infer(server, name, X[:4])
        assert answer.status_code == 503, answer.text
        assert name in answer.json()["error"]
        assert "not a valid" in answer.json()["error"]


def test_healthy_models_answer_every_row_beside_them(server: ServerProcess) -> None:
    for name in ("xgb-good", "lgb-good"):
        answer = _infer(server, name, X)
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["outputs"][0]["data"]) == len(X)
    body = {"inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]},
                       {"name": "b", "datatype": "FP32", "shape": [1, 3], "data": [1, 1, 1]}]}
    assert httpx.post(f"{server.url}/v2/models/adder/infer", json=body, timeout=10).status_code == 200
    assert server.process is not None
    assert server.process.poll() is None
