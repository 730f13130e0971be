"""The XGBoost runtime: signatures read from boosters, and predictions equal to XGBoost's own."""

from __future__ import annotations

import json
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

xgb = pytest.importorskip("xgboost")

FEATURES = 5
X = np.random.default_rng(0).normal(size=(48, FEATURES)).astype(np.float32)
BINARY = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
THREE_CLASSES = np.digitize(X[:, 2], [-0.5, 0.5])
SMALL = {"n_estimators": 4, "max_depth": 2, "n_jobs": 1}
INPUT = TensorSpec("input", "FP32", (-1, FEATURES))
FORMATS = pytest.mark.parametrize("filename", ["model.json", "model.ubj"])


def save(booster: Any, folder: Path, filename: str = "model.json") -> Path:
    path = folder / filename
    booster.save_model(str(path))
    return path


def load(path: Path, options: dict[str, Any] | None = None, override: Signature | None = None) -> Runtime:
    return load_runtime(RUNTIMES["xgboost"], path, path.parent, options or {}, override)


def predict(runtime: Runtime, x: np.ndarray = X) -> dict[str, np.ndarray]:
    return booster_checks.predict(runtime, x)


def assert_classifier(runtime: Runtime, model: Any, num_class: int) -> None:
    booster_checks.assert_classifier(runtime, model, num_class, X)


def assert_single(runtime: Runtime, name: str, expected: np.ndarray) -> None:
    booster_checks.assert_single(runtime, name, expected, X)


@FORMATS
def test_binary_classifier(tmp_path: Path, filename: str) -> None:
    model = xgb.XGBClassifier(**SMALL).fit(X, BINARY)
    runtime = load(save(model.get_booster(), tmp_path, filename))
    assert isinstance(runtime, Runtime)
    assert_classifier(runtime, model, 2)


@FORMATS
def test_multiclass_softprob(tmp_path: Path, filename: str) -> None:
    model = xgb.XGBClassifier(**SMALL).fit(X, THREE_CLASSES)
    assert_classifier(load(save(model.get_booster(), tmp_path, filename)), model, 3)


@FORMATS
def test_multiclass_softmax_still_gives_probabilities(tmp_path: Path, filename: str) -> None:
    model = xgb.XGBClassifier(objective="multi:softmax", **SMALL).fit(X, THREE_CLASSES)
    assert_classifier(load(save(model.get_booster(), tmp_path, filename)), model, 3)


@FORMATS
def test_regressor(tmp_path: Path, filename: str) -> None:
    model = xgb.XGBRegressor(**SMALL).fit(X, X[:, 0] * 2 - X[:, 3])
    assert_single(load(save(model.get_booster(), tmp_path, filename)), "prediction", model.predict(X))


@FORMATS
def test_ranker(tmp_path: Path, filename: str) -> None:
    relevance = np.random.default_rng(1).integers(0, 3, len(X))
    query = np.repeat(np.arange(len(X) // 6), 6)
    model = xgb.XGBRanker(**SMALL).fit(X, relevance, qid=query)
    assert_single(load(save(model.get_booster(), tmp_path, filename)), "score", model.predict(X))


def test_count_objective_is_a_prediction(tmp_path: Path) -> None:
    model = xgb.XGBRegressor(objective="count:poisson", **SMALL).fit(X, THREE_CLASSES)
    assert_single(load(save(model.get_booster(), tmp_path)), "prediction", model.predict(X))


def test_several_targets_give_one_column_each(tmp_path: Path) -> None:
    model = xgb.XGBRegressor(**SMALL).fit(X, X[:, :2])
    runtime = load(save(model.get_booster(), tmp_path))
    assert runtime.signature.outputs == (TensorSpec("prediction", "FP32", (-1, 2)),)
    np.testing.assert_allclose(predict(runtime)["prediction"], model.predict(X), rtol=1e-5)


def test_early_stopping_predicts_with_the_best_iteration(tmp_path: Path) -> None:
    model = xgb.XGBClassifier(n_estimators=60, max_depth=2, n_jobs=1, early_stopping_rounds=2)
    model.fit(X[:32], BINARY[:32], eval_set=[(X[32:], BINARY[32:])], verbose=False)
    booster = model.get_booster()
    assert booster.best_iteration + 1 < booster.num_boosted_rounds()  # the test needs trees to ignore
    assert_classifier(load(save(booster, tmp_path)), model, 2)


def test_linear_booster(tmp_path: Path) -> None:
    model = xgb.XGBClassifier(booster="gblinear", n_estimators=4, n_jobs=1).fit(X, BINARY)
    assert_classifier(load(save(model.get_booster(), tmp_path)), model, 2)


@pytest.mark.parametrize("linear", [False, True])
def test_booster_with_feature_names_takes_a_plain_matrix(tmp_path: Path, linear: bool) -> None:
    names = [f"f{i}" for i in range(FEATURES)]
    train = xgb.DMatrix(X, label=X[:, 0], feature_names=names)
    params = {"booster": "gblinear" if linear else "gbtree", "nthread": 1}
    booster = xgb.train(params, train, num_boost_round=3)
    runtime = load(save(booster, tmp_path))
    expected = booster.predict(xgb.DMatrix(X, feature_names=names))
    np.testing.assert_allclose(predict(runtime)["prediction"], expected, rtol=1e-5)


def test_empty_batch_keeps_the_declared_shapes(tmp_path: Path) -> None:
    model = xgb.XGBClassifier(**SMALL).fit(X, THREE_CLASSES)
    outputs = predict(load(save(model.get_booster(), tmp_path)), X[:0])
    assert outputs["label"].shape == (0,)
    assert outputs["probabilities"].shape == (0, 3)


def test_concurrent_predictions_agree(tmp_path: Path) -> None:
    model = xgb.XGBClassifier(**SMALL).fit(X, THREE_CLASSES)
    runtime = load(save(model.get_booster(), tmp_path))
    batches = [X[i::4] for i in range(4)] * 4
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda x: predict(runtime, x)["probabilities"], batches))
    for x, result in zip(batches, results, strict=True):
        np.testing.assert_allclose(result, model.predict_proba(x), rtol=1e-5)


def test_nthread_option(tmp_path: Path) -> None:
    model = xgb.XGBRegressor(**SMALL).fit(X, X[:, 0])
    runtime = load(save(model.get_booster(), tmp_path), {"nthread": 2})
    np.testing.assert_allclose(predict(runtime)["prediction"], model.predict(X), rtol=1e-5)


@pytest.mark.parametrize("options", [{"threads": 2}, {"nthread": -1}, {"nthread": "2"}])
def test_bad_options_are_config_errors(tmp_path: Path, options: dict[str, Any]) -> None:
    model = xgb.XGBRegressor(**SMALL).fit(X, X[:, 0])
    path = save(model.get_booster(), tmp_path)
    with pytest.raises(ConfigError, match="options"):
        load(path, options)


@FORMATS
@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"\x00\x01 not a model {]", id="garbage"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"learner": 1}', id="not-a-model"),
    ],
)
def test_corrupt_artifact_names_the_file(tmp_path: Path, filename: str, content: bytes) -> None:
    path = tmp_path / filename
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a valid XGBoost model") as caught:
        load(path)
    assert str(path) in str(caught.value)


@FORMATS
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_truncated_artifact_names_the_file(tmp_path: Path, filename: str, fraction: float) -> None:
    # XGBoost itself crashes the process on many truncated .ubj files, so this test must never reach it.
    model = xgb.XGBClassifier(**SMALL).fit(X, BINARY)
    path = save(model.get_booster(), tmp_path, filename)
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * fraction)].rstrip(b"}"))
    with pytest.raises(ValueError, match="truncated") as caught:
        load(path)
    assert str(path) in str(caught.value)


def test_override_that_contradicts_the_model_is_refused(tmp_path: Path) -> None:
    model = xgb.XGBRegressor(**SMALL).fit(X, X[:, 0])
    path = save(model.get_booster(), tmp_path)
    with pytest.raises(ValueError, match="shape"):
        load(path, override=Signature((TensorSpec("input", "FP32", (-1, 99)),), ()))


def test_override_that_agrees_with_the_model_is_accepted(tmp_path: Path) -> None:
    model = xgb.XGBClassifier(**SMALL).fit(X, BINARY)
    path = save(model.get_booster(), tmp_path)
    declared = load(path).signature
    runtime = load(path, override=Signature((INPUT,), (TensorSpec("probabilities", "FP32", (-1, 2)),)))
    assert runtime.signature == declared


def test_close(tmp_path: Path) -> None:
    model = xgb.XGBRegressor(**SMALL).fit(X, X[:, 0])
    runtime = load(save(model.get_booster(), tmp_path))
    runtime.close()


@pytest.mark.parametrize("damage", sorted(damaged_models.XGBOOST_DAMAGE))
@FORMATS
def test_damaged_tree_is_refused_before_xgboost_reads_it(tmp_path: Path, damage: str, filename: str) -> None:
    # XGBoost itself crashes the process on these files (on the first prediction down the damaged branch),
    # so this test must never reach it.
    model = xgb.XGBRegressor(**SMALL).fit(X, X[:, 0])
    damaged = damaged_models.damage_xgboost(save(model.get_booster(), tmp_path), tmp_path / "damaged.json", damage)
    path = damaged
    if filename == "model.ubj":  # the same damage in the binary format: XGBoost converts its own JSON
        path = tmp_path / "model.ubj"
        path.write_bytes(ubj_of(damaged.read_bytes()))
    with pytest.raises(ValueError, match=r"not a valid XGBoost model: .*tree 0: ") as caught:
        load(path)
    assert str(path) in str(caught.value)


def ubj_of(json_bytes: bytes) -> bytes:
    """The UBJSON form of a model document, written without XGBoost (which would have to load it first)."""
    import ubjson_writer

    return ubjson_writer.dumps(json.loads(json_bytes))


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(lambda: xgb.XGBRegressor(**SMALL, tree_method="hist", multi_strategy="multi_output_tree")
                     .fit(X, X[:, :2]), id="multi-output-tree"),
        pytest.param(lambda: xgb.XGBRegressor(**SMALL, booster="dart").fit(X, X[:, 0]), id="dart"),
        pytest.param(lambda: xgb.XGBRFRegressor(n_estimators=3, max_depth=2).fit(X, X[:, 0]), id="forest"),
        pytest.param(lambda: xgb.XGBRegressor(n_estimators=4, tree_method="exact", gamma=5.0).fit(X, X[:, 0]),
                     id="pruned-nodes"),
    ],
)
@FORMATS
def test_valid_models_of_every_kind_pass_the_structure_checks(tmp_path: Path, model: Any, filename: str) -> None:
    fitted = model()
    runtime = load(save(fitted.get_booster(), tmp_path, filename))
    np.testing.assert_allclose(predict(runtime)["prediction"].reshape(len(X), -1),
                               fitted.predict(X).reshape(len(X), -1), rtol=1e-5)


@FORMATS
def test_categorical_splits_pass_the_structure_checks(tmp_path: Path, filename: str) -> None:
    pd = pytest.importorskip("pandas")
    codes = np.random.default_rng(3).integers(0, 6, len(X))
    frame = pd.DataFrame(X[:, :4], columns=list("abcd")).assign(e=pd.Categorical(codes))
    model = xgb.XGBRegressor(n_estimators=3, max_depth=2, tree_method="hist", enable_categorical=True,
                             max_cat_to_onehot=1).fit(frame, (codes % 3) * 5.0)
    path = save(model.get_booster(), tmp_path, filename)
    assert any(sum(t["split_type"]) for t in json.loads(model.get_booster().save_raw("json"))["learner"]
               ["gradient_booster"]["model"]["trees"])
    assert load(path).signature.inputs == (INPUT,)
