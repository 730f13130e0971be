"""The sklearn runtime: skops by default, pickles only when trusted, signatures from the estimator."""

import joblib
import numpy as np
import pytest
import skops.io as sio
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline

from inferd.runtimes.registry import RUNTIMES, load_runtime
from inferd.signature import Signature, TensorSpec


def load(path, options=None, override=None):
    return load_runtime(RUNTIMES["sklearn"], path, path.parent, options or {}, override)


@pytest.fixture(scope="module")
def classifier(digits):
    x, y = digits
    return LogisticRegression(max_iter=300).fit(x[:500], y[:500])


def test_classifier_from_skops_has_label_and_probabilities(tmp_path, classifier, digits):
    path = tmp_path / "model.skops"
    sio.dump(classifier, path)
    runtime = load(path)
    assert runtime.signature == Signature(
        (TensorSpec("input", "FP32", (-1, 64)),),
        (TensorSpec("label", "INT64", (-1,)), TensorSpec("probabilities", "FP64", (-1, 10))),
    )
    x = digits[0][500:520]
    out = runtime.predict({"input": x})
    np.testing.assert_array_equal(out["label"], classifier.predict(x))
    np.testing.assert_allclose(out["probabilities"], classifier.predict_proba(x))


def test_pickle_is_refused_unless_trusted(tmp_path, classifier, digits):
    path = tmp_path / "model.joblib"
    joblib.dump(classifier, path)
    with pytest.raises(PermissionError, match="refusing to load a pickle: unpickling runs any code") as info:
        load(path)
    assert "allow_pickle = true under [options] in model.toml" in str(info.value)
    runtime = load(path, {"allow_pickle": True})
    assert runtime.predict({"input": digits[0][:3]})["label"].tolist() == classifier.predict(digits[0][:3]).tolist()


class Doubler(BaseEstimator, TransformerMixin):
    """A user-defined step: skops cannot know it is safe, so inferd refuses it until trusted."""

    def fit(self, x, y=None):
        self.n_features_in_ = np.asarray(x).shape[1]
        return self

    def transform(self, x):
        return np.asarray(x) * 2


def test_untrusted_skops_types_are_refused_until_listed(tmp_path, digits):
    x, y = digits
    model = make_pipeline(Doubler(), LogisticRegression(max_iter=300)).fit(x[:300], y[:300])
    path = tmp_path / "model.skops"
    sio.dump(model, path)
    untrusted = sio.get_untrusted_types(file=path)
    assert untrusted == [f"{Doubler.__module__}.Doubler"]
    with pytest.raises(PermissionError, match="not trusted by default: .*Doubler") as info:
        load(path)
    assert "trusted_types = [...]" in str(info.value)
    runtime = load(path, {"trusted_types": untrusted})
    assert runtime.predict({"input": x[300:310]})["label"].tolist() == model.predict(x[300:310]).tolist()


def test_text_pipeline_takes_bytes(tmp_path):
    texts = ["win money now", "free prize click", "lunch at noon", "see you tomorrow"] * 5
    labels = ["spam", "spam", "ham", "ham"] * 5
    model = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, labels)
    path = tmp_path / "model.skops"
    sio.dump(model, path)
    runtime = load(path)
    assert runtime.signature.inputs == (TensorSpec("text", "BYTES", (-1,)),)
    assert runtime.signature.outputs[0] == TensorSpec("label", "BYTES", (-1,))
    out = runtime.predict({"text": np.array([b"free money prize", b"lunch tomorrow"], dtype=object)})
    assert out["label"].tolist() == ["spam", "ham"]


def test_regressor_and_input_override(tmp_path):
    x = np.arange(20, dtype=np.float64).reshape(10, 2)
    model = LinearRegression().fit(x, x.sum(axis=1))
    path = tmp_path / "model.skops"
    sio.dump(model, path)
    override = Signature((TensorSpec("features", "FP64", (-1, 2)),), ())
    runtime = load(path, override=override)
    assert runtime.signature.inputs == (TensorSpec("features", "FP64", (-1, 2)),)
    assert runtime.signature.outputs == (TensorSpec("prediction", "FP64", (-1,)),)
    np.testing.assert_allclose(runtime.predict({"features": x[:2]})["prediction"], [1.0, 5.0])
    with pytest.raises(ValueError, match=r"has shape \[-1, 2\] in the model, the override says \[-1, 3\]"):
        load(path, override=Signature((TensorSpec("features", "FP64", (-1, 3)),), ()))


def test_corrupt_skops_file(tmp_path):
    path = tmp_path / "model.skops"
    path.write_bytes(b"not a zip file")
    with pytest.raises(Exception, match="(?i)zip"):
        load(path)


def test_object_without_predict(tmp_path):
    path = tmp_path / "model.skops"
    sio.dump(TfidfVectorizer(), path)
    with pytest.raises(ValueError, match="holds a TfidfVectorizer, which has no predict"):
        load(path)


def test_loading_a_skops_model_does_not_import_torch(tmp_path):
    """skops.io lists scikit-learn's estimators, which would import torch when it is installed."""
    import subprocess
    import sys

    model = LinearRegression().fit(np.arange(6.0).reshape(3, 2), [0.0, 1.0, 2.0])
    sio.dump(model, tmp_path / "model.skops")
    code = (
        "import sys\nfrom pathlib import Path\nfrom inferd.runtimes.registry import RUNTIMES, load_runtime\n"
        f"load_runtime(RUNTIMES['sklearn'], Path({str(tmp_path / 'model.skops')!r}), Path({str(tmp_path)!r}), {{}}, None)\n"
        "print('torch' in sys.modules)\nimport torch\nprint(torch.__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "torch"]  # not imported by the load; still importable after
