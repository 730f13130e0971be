"""The LightGBM runtime: signatures read from boosters, and predictions equal to LightGBM's own."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import booster_checks
import damaged_models
from inferd.config import ConfigError
from inferd.runtimes.base import Runtime
from inferd.runtimes.registry import RUNTIMES, load_runtime
from inferd.signature import Signature, TensorSpec

lgb = pytest.importorskip("lightgbm")

FEATURES = 5
X = np.random.default_rng(0).normal(size=(60, FEATURES)).astype(np.float32)
BINARY = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
THREE_CLASSES = np.digitize(X[:, 2], [-0.5, 0.5])
RELEVANCE = np.random.default_rng(1).integers(0, 3, len(X))
GROUPS = [6] * (len(X) // 6)
SMALL = {"n_estimators": 4, "num_leaves": 4, "min_child_samples": 3, "n_jobs": 1, "verbose": -1}
INPUT = TensorSpec("input", "FP32", (-1, FEATURES))


def save(model: Any, folder: Path) -> Path:
    path = folder / "model.txt"
    model.booster_.save_model(str(path))
    return path


def load(path: Path, options: dict[str, Any] | None = None, override: Signature | None = None) -> Runtime:
    return load_runtime(RUNTIMES["lightgbm"], path, path.parent, options or {}, override)


def predict(runtime: Runtime, x: np.ndarray = X) -> dict[str, np.ndarray]:
    return booster_checks.predict(runtime, x)


def assert_classifier(runtime: Runtime, model: Any, num_class: int) -> None:
    booster_checks.assert_classifier(runtime, model, num_class, X)


def assert_single(runtime: Runtime, name: str, expected: np.ndarray) -> None:
    booster_checks.assert_single(runtime, name, expected, X)


def regressor(tmp_path: Path) -> tuple[Any, Path]:
    model = lgb.LGBMRegressor(**SMALL).fit(X, X[:, 0] * 2 - X[:, 3])
    return model, save(model, tmp_path)


def test_binary_classifier(tmp_path: Path) -> None:
    model = lgb.LGBMClassifier(**SMALL).fit(X, BINARY)
    runtime = load(save(model, tmp_path))
    assert isinstance(runtime, Runtime)
    assert_classifier(runtime, model, 2)


@pytest.mark.parametrize("objective", ["multiclass", "multiclassova", "softmax"])
def test_multiclass(tmp_path: Path, objective: str) -> None:
    model = lgb.LGBMClassifier(objective=objective, **SMALL).fit(X, THREE_CLASSES)
    assert_classifier(load(save(model, tmp_path)), model, 3)


def test_regressor(tmp_path: Path) -> None:
    model, path = regressor(tmp_path)
    assert_single(load(path), "prediction", model.predict(X))


@pytest.mark.parametrize("objective", ["lambdarank", "rank_xendcg"])
def test_ranker(tmp_path: Path, objective: str) -> None:
    model = lgb.LGBMRanker(objective=objective, **SMALL).fit(X, RELEVANCE, group=GROUPS)
    assert_single(load(save(model, tmp_path)), "score", model.predict(X))


def test_custom_objective_is_a_raw_prediction(tmp_path: Path) -> None:
    def squared_error(y: np.ndarray, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return raw - y, np.ones_like(raw)

    model = lgb.LGBMRegressor(objective=squared_error, **SMALL).fit(X, X[:, 0])
    assert_single(load(save(model, tmp_path)), "prediction", model.predict(X))


def test_booster_with_feature_names_takes_a_plain_matrix(tmp_path: Path) -> None:
    names = [f"f{i}" for i in range(FEATURES)]
    model = lgb.LGBMRegressor(**SMALL).fit(X, X[:, 0], feature_name=names)
    assert model.booster_.feature_name() == names
    # The booster, not the wrapper: the wrapper warns about a matrix without names, which the runtime takes.
    assert_single(load(save(model, tmp_path)), "prediction", model.booster_.predict(X))


def test_empty_batch_keeps_the_declared_shapes(tmp_path: Path) -> None:
    model = lgb.LGBMClassifier(**SMALL).fit(X, THREE_CLASSES)
    outputs = predict(load(save(model, tmp_path)), X[:0])
    assert outputs["label"].shape == (0,)
    assert outputs["probabilities"].shape == (0, 3)


def test_concurrent_predictions_agree(tmp_path: Path) -> None:
    model = lgb.LGBMClassifier(**SMALL).fit(X, THREE_CLASSES)
    runtime = load(save(model, tmp_path))
    batches = [X[i::4] for i in range(4)] * 4
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda x: predict(runtime, x)["probabilities"], batches))
    for x, result in zip(batches, results, strict=True):
        np.testing.assert_allclose(result, model.predict_proba(x), rtol=1e-5)


def test_num_threads_option(tmp_path: Path) -> None:
    model, path = regressor(tmp_path)
    runtime = load(path, {"num_threads": 2})
    np.testing.assert_allclose(predict(runtime)["prediction"], model.predict(X), rtol=1e-5)


@pytest.mark.parametrize("options", [{"nthread": 2}, {"num_threads": -1}, {"num_threads": "2"}])
def test_bad_options_are_config_errors(tmp_path: Path, options: dict[str, Any]) -> None:
    _, path = regressor(tmp_path)
    with pytest.raises(ConfigError, match="options"):
        load(path, options)


def test_unknown_option_error_names_the_line_of_model_toml(tmp_path: Path) -> None:
    _, path = regressor(tmp_path)
    (tmp_path / "model.toml").write_text('runtime = "lightgbm"\n\n[options]\nthreads = 2\n')
    with pytest.raises(ConfigError, match=r"model\.toml:4: key 'options\.threads': unknown key"):
        load(path, {"threads": 2})


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"\x00\x01 not a model {]", id="garbage"),
        pytest.param(b"tree\nend of trees\n", id="header-missing"),
    ],
)
def test_corrupt_artifact_names_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a valid LightGBM model") as caught:
        load(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("cut_before", [b"Tree=1", b"end of trees", b"end of parameters"])
def test_truncated_artifact_is_refused_before_lightgbm_parses_it(tmp_path: Path, cut_before: bytes) -> None:
    # LightGBM itself crashes the process on most of these files, so this test must never reach it.
    model = lgb.LGBMClassifier(**SMALL).fit(X, THREE_CLASSES)
    path = save(model, tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: data.index(cut_before) - 7])
    with pytest.raises(ValueError, match="truncated") as caught:
        load(path)
    assert str(path) in str(caught.value)


def test_override_that_contradicts_the_model_is_refused(tmp_path: Path) -> None:
    _, path = regressor(tmp_path)
    with pytest.raises(ValueError, match="shape"):
        load(path, override=Signature((TensorSpec("input", "FP32", (-1, 99)),), ()))


def test_override_that_agrees_with_the_model_is_accepted(tmp_path: Path) -> None:
    model = lgb.LGBMClassifier(**SMALL).fit(X, BINARY)
    path = save(model, tmp_path)
    declared = load(path).signature
    runtime = load(path, override=Signature((INPUT,), (TensorSpec("probabilities", "FP32", (-1, 2)),)))
    assert runtime.signature == declared


def test_close(tmp_path: Path) -> None:
    _, path = regressor(tmp_path)
    load(path).close()


@pytest.mark.parametrize("damage", sorted(damaged_models.LIGHTGBM_DAMAGE))
def test_damaged_tree_is_refused_before_lightgbm_parses_it(tmp_path: Path, damage: str) -> None:
    # LightGBM itself aborts, segfaults or never returns on these files, so this test must never reach it.
    model = lgb.LGBMClassifier(**SMALL).fit(X, THREE_CLASSES)
    (tmp_path / "damaged").mkdir()
    path = damaged_models.damage_lightgbm(save(model, tmp_path), tmp_path / "damaged" / "model.txt", damage)
    with pytest.raises(ValueError, match=r"not a valid LightGBM model: Tree=0: ") as caught:
        load(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(lambda: lgb.LGBMRegressor(**SMALL, linear_tree=True).fit(X, X[:, 0] * 3 + X[:, 1]),
                     id="linear-tree"),
        pytest.param(lambda: lgb.LGBMRegressor(n_estimators=2, min_child_samples=1000, verbose=-1)
                     .fit(X, X[:, 0]), id="single-leaf-trees"),
        pytest.param(lambda: lgb.LGBMRegressor(n_estimators=4, num_leaves=4, min_child_samples=2, cat_smooth=1,
                                               min_data_per_group=2, verbose=-1)
                     .fit(np.column_stack([X[:, :4], np.arange(len(X)) % 6]), (np.arange(len(X)) % 6 % 3) * 5.0,
                          categorical_feature=[4]), id="categorical-splits"),
    ],
)
def test_valid_models_of_every_kind_pass_the_structure_checks(tmp_path: Path, model: Any) -> None:
    fitted = model()
    x = np.column_stack([X[:, :4], np.arange(len(X)) % 6]).astype(np.float32)
    assert_single_on(load(save(fitted, tmp_path)), fitted.predict(x), x)


def assert_single_on(runtime: Runtime, expected: np.ndarray, x: np.ndarray) -> None:
    booster_checks.assert_single(runtime, "prediction", expected, x)
