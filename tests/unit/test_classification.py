"""Triton's classification extension: the top classes of an output, their text form, labels from the model folder,
and the refusals, through the DataPlane as every transport reaches it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import orjson
import pytest

from fakes import CLASSIFIER, SHOUT, write_model
from inferd.classification import Classes, classify, read_labels
from inferd.codecs.v2_body import V2Body
from inferd.dataplane import DataPlane
from inferd.errors import ErrorCode, InferError
from inferd.inference import InferenceRequest, RequestInput, RequestOutput
from inferd.repository import ModelRepository

LABELLED = """
[labels]
scores = "classes.txt"
"""
FEATURES = RequestInput("features", "FP32", [2, 4], [1, 1, 1, 1, -1, -2, -3, -4])


def strings(array: np.ndarray) -> list[object]:
    return np.vectorize(bytes.decode, otypes=[object])(array).tolist()


def test_tritons_example_top_two_with_six_decimals():
    """The extension's own example: [1.1, 3.3, 0.5, 2.4] with classification 2 is ["3.3:1", "2.4:3"], values written
    as Triton's std::to_string writes a float."""
    out = classify(np.array([[1.1, 3.3, 0.5, 2.4]], dtype=np.float32), Classes(2), batched=True)
    assert out.dtype == object
    assert out.shape == (1, 2)
    assert strings(out) == [["3.300000:1", "2.400000:3"]]


def test_integers_in_full_labels_where_known_and_a_count_past_the_classes_gives_them_all():
    out = classify(np.array([1, 5, 10, 4], dtype=np.uint8), Classes(9, ("a", "", "apple")), batched=False)
    assert strings(out) == ["10:2:apple", "5:1", "4:3", "1:0:a"]  # index 1 has an empty line, 3 is past the end


def test_ties_keep_index_order_and_nan_ranks_last():
    out = classify(np.array([[0.5, np.nan, 0.5, 0.25], [2, 2, 2, 2]], dtype=np.float64), Classes(4), batched=True)
    assert strings(out) == [["0.500000:0", "0.500000:2", "0.250000:3", "nan:1"],
                            ["2.000000:0", "2.000000:1", "2.000000:2", "2.000000:3"]]


def test_each_row_ranks_everything_after_the_batch_dimension():
    rows = np.arange(12, dtype=np.float16).reshape(2, 2, 3)
    assert strings(classify(rows, Classes(2), batched=True)) == [["5.000000:5", "4.000000:4"],
                                                                   ["11.000000:5", "10.000000:4"]]
    assert classify(np.zeros((0, 10), dtype=np.float32), Classes(3), batched=True).shape == (0, 3)


def test_labels_file_one_per_line(tmp_path: Path):
    path = tmp_path / "labels.txt"
    path.write_bytes("zéro\r\none\n\nthree\n".encode())
    assert read_labels(path) == ("zéro", "one", "", "three")


# -- through the DataPlane ------------------------------------------------------------------------------------
@pytest.fixture
def plane(repo_root: Path):
    folder = write_model(repo_root, "labelled", CLASSIFIER, LABELLED)
    (folder / "classes.txt").write_text("negative\npositive\n")
    write_model(repo_root, "plain", CLASSIFIER)
    write_model(repo_root, "shout", SHOUT)
    dataplane = DataPlane(ModelRepository(repo_root))
    asyncio.run(dataplane.start())
    yield dataplane
    dataplane.close()


def infer(plane: DataPlane, model: str, outputs: list[RequestOutput] | None):
    return asyncio.run(plane.infer(InferenceRequest(model, [FEATURES], outputs=outputs)))


def test_a_requested_output_becomes_its_top_classes_with_labels(plane):
    response = infer(plane, "labelled", [RequestOutput("scores", {"classification": 1}), RequestOutput("label")])
    scores, label = response.outputs
    assert (scores.name, scores.datatype, scores.shape) == ("scores", "BYTES", [2, 1])
    assert strings(scores.data) == [["4.000000:1:positive"], ["10.000000:0:negative"]]
    assert (label.datatype, label.data.tolist()) == ("INT64", [1, 0])  # not asked for classes: as the model gave it


def test_without_labels_and_with_a_count_of_zero(plane):
    (scores,) = infer(plane, "plain", [RequestOutput("scores", {"classification": 5})]).outputs
    assert scores.shape == [2, 2]
    assert strings(scores.data) == [["4.000000:1", "-4.000000:0"], ["10.000000:0", "-10.000000:1"]]
    (raw,) = infer(plane, "plain", [RequestOutput("scores", {"classification": 0})]).outputs
    assert (raw.datatype, raw.data.tolist()) == ("FP32", [[-4, 4], [10, -10]])


def test_the_v2_body_answers_classes_as_json(plane):
    body = orjson.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 4],
                                     "data": [1, 1, 1, 1, -1, -2, -3, -4]}],
                         "outputs": [{"name": "scores", "parameters": {"classification": 2}}]})
    content, header_length = asyncio.run(plane.infer(V2Body(body, None, "labelled", None)))
    assert header_length is None
    (output,) = orjson.loads(content)["outputs"]
    assert output == {"name": "scores", "datatype": "BYTES", "shape": [2, 2],
                      "data": ["4.000000:1:positive", "-4.000000:0:negative",
                               "10.000000:0:negative", "-10.000000:1:positive"]}


@pytest.mark.parametrize(("model", "output", "count", "message"), [
    ("shout", "upper", 1, "output 'upper': classification needs a numeric output to rank, but it is BYTES"),
    ("plain", "scores", -1, "output 'scores': classification must be a non-negative integer .* got -1"),
    ("plain", "scores", True, "classification must be a non-negative integer .* got True"),
    ("plain", "scores", "2", "classification must be a non-negative integer .* got '2'"),
])
def test_refused_before_the_model_runs(plane, model, output, count, message):
    inputs = [RequestInput("text", "BYTES", [1], ["hi"])] if model == "shout" else [FEATURES]
    with pytest.raises(InferError, match=message) as info:
        asyncio.run(plane.infer(InferenceRequest(model, inputs, outputs=[RequestOutput(output,
                                                                                       {"classification": count})])))
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


@pytest.mark.parametrize(("toml", "reason"), [
    ('[labels]\nscore = "classes.txt"\n', "[labels] score = 'classes.txt': the model has no output 'score'; "
                                         "its outputs are 'label', 'scores'"),
    ('[labels]\nscores = "missing.txt"\n', "[labels] scores = 'missing.txt': cannot read the labels file"),
    ('[labels]\nscores = "../classes.txt"\n', "model.toml:2: key 'labels.scores': a labels file must be a file "
                                             "name inside the model folder, got '../classes.txt'"),
])
def test_a_labels_table_that_does_not_fit_the_model_fails_its_load_with_the_key_named(repo_root, toml, reason):
    write_model(repo_root, "broken", CLASSIFIER, toml)
    dataplane = DataPlane(ModelRepository(repo_root))
    asyncio.run(dataplane.start())
    try:
        (entry,) = dataplane.repository_index()
        assert entry.state == "UNAVAILABLE"
        assert reason in entry.reason
    finally:
        dataplane.close()
