"""The onnx runtime on models built inside the test: a digits classifier converted with skl2onnx and a
hand-made graph with a string input."""

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from inferd.config import ConfigError
from inferd.runtimes.registry import RUNTIMES, load_runtime
from inferd.signature import Signature, TensorSpec


@pytest.fixture(scope="module")
def digits_onnx(tmp_path_factory, digits):
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    x, y = digits
    clf = LogisticRegression(max_iter=500).fit(x[:600], y[:600])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skl2onnx's own deprecation noise
        model = convert_sklearn(clf, initial_types=[("input", FloatTensorType([None, 64]))],
                                options={id(clf): {"zipmap": False}}, target_opset=17)
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path, clf


def load(path, options=None, override=None):
    return load_runtime(RUNTIMES["onnx"], path, path.parent, options or {}, override)


def test_signature_comes_from_the_graph(digits_onnx):
    runtime = load(digits_onnx[0])
    assert runtime.signature == Signature(
        (TensorSpec("input", "FP32", (-1, 64)),),
        (TensorSpec("label", "INT64", (-1,)), TensorSpec("probabilities", "FP32", (-1, 10))),
    )


def test_predictions_match_scikit_learn(digits_onnx, digits):
    path, clf = digits_onnx
    x = digits[0][600:700]
    out = load(path).predict({"input": x})
    np.testing.assert_allclose(out["probabilities"], clf.predict_proba(x), atol=1e-4)
    np.testing.assert_array_equal(out["label"], clf.predict(x))


def test_thread_options_and_unknown_option(digits_onnx):
    path = digits_onnx[0]
    assert load(path, {"intra_op_threads": 2, "inter_op_threads": 1, "graph_optimization": "basic"})
    with pytest.raises(ConfigError, match="key 'options.threads': unknown key"):
        load(path, {"threads": 2})
    with pytest.raises(ConfigError, match="options.graph_optimization"):
        load(path, {"graph_optimization": "max"})


def test_override_narrowing_and_contradiction(digits_onnx):
    path = digits_onnx[0]
    narrowed = load(path, override=Signature((TensorSpec("input", "FP32", (1, 64)),), ()))
    assert narrowed.signature.inputs[0].shape == (1, 64)
    with pytest.raises(ValueError, match=r"input 'input' has shape \[-1, 64\] in the model, the override says \[-1, 8\]"):
        load(path, override=Signature((TensorSpec("input", "FP32", (-1, 8)),), ()))


def test_corrupt_artifact(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"definitely not protobuf")
    with pytest.raises(Exception, match="(?i)protobuf|load model|invalid"):
        load(path)


def test_string_inputs_and_outputs(tmp_path):
    node = helper.make_node("Identity", ["words"], ["same"])
    graph = helper.make_graph(
        [node], "echo",
        [helper.make_tensor_value_info("words", TensorProto.STRING, ["n"])],
        [helper.make_tensor_value_info("same", TensorProto.STRING, ["n"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    runtime = load(path)
    assert runtime.signature.inputs[0] == TensorSpec("words", "BYTES", (-1,))
    words = np.array([b"caf\xc3\xa9", b"tea"], dtype=object)
    assert list(runtime.predict({"words": words})["same"]) == ["café", "tea"]
