"""Randomly damaged XGBoost and LightGBM models (child, feature and category indices, counts, lengths) are either
refused by inferd's structure checks or load and predict: the native library never crashes or hangs on them.
The mutants run in a child process (:mod:`booster_mutants`), whose death or silence names the last mutant."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

xgb = pytest.importorskip("xgboost")
lgb = pytest.importorskip("lightgbm")

MUTANTS = int(os.environ.get("INFERD_BOOSTER_MUTANTS", "300"))
X = np.random.default_rng(0).uniform(-3, 3, size=(300, 4)).astype(np.float32)


def _run(runtime: str, folder: Path) -> None:
    script = Path(__file__).with_name("booster_mutants.py")
    try:
        done = subprocess.run([sys.executable, str(script), runtime, str(folder), str(MUTANTS), "7"],
                              capture_output=True, text=True, timeout=300, check=False)
    except subprocess.TimeoutExpired as exc:
        last = (exc.stdout or b"").decode(errors="replace").strip().splitlines()[-1:]
        pytest.fail(f"{runtime}: a mutant hung the library: {last}")
    last = done.stdout.strip().splitlines()[-1:]
    assert done.returncode == 0, f"{runtime} died ({done.returncode}) on {last}:\n{done.stderr[-2000:]}"
    assert last[0].startswith("done: "), done.stdout[-500:]


def test_damaged_xgboost_models_never_crash_the_process(tmp_path: Path) -> None:
    model = xgb.XGBRegressor(n_estimators=6, max_depth=3, n_jobs=1).fit(X, X[:, 0] * 2 + X[:, 1])
    model.get_booster().save_model(str(tmp_path / "model.json"))
    _run("xgboost", tmp_path)


def test_damaged_lightgbm_models_never_crash_the_process(tmp_path: Path) -> None:
    codes = np.arange(len(X)) % 5
    x = np.column_stack([X[:, :3], codes]).astype(np.float32)
    model = lgb.LGBMRegressor(n_estimators=6, num_leaves=6, min_child_samples=3, min_data_per_group=2,
                              cat_smooth=1, n_jobs=1, verbose=-1).fit(x, X[:, 0] + codes % 2, categorical_feature=[3])
    model.booster_.save_model(str(tmp_path / "model.txt"))
    assert "num_cat=1" in (tmp_path / "model.txt").read_text() or "num_cat=2" in (tmp_path / "model.txt").read_text()
    _run("lightgbm", tmp_path)
