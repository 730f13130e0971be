"""The demo repository: it builds quickly and deterministically, every model loads and answers its example
request sensibly through the DataPlane, and the served models are good on held-out data."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from sklearn.metrics import ndcg_score

from inferd.dataplane import DataPlane
from inferd.examples import digits, eta, ranker, spam
from inferd.examples.build import EXAMPLES, Example, build_demo_repository
from inferd.inference import InferenceRequest, RequestInput
from inferd.repository import ModelRepository, State

MAX_BUILD_SECONDS = 30.0
"""Generous, to catch a pathological regression only; the build normally takes a few seconds."""

LAYOUT = {
    "spam": {"1/model.skops"},
    "eta": {"1/model.json", "model.toml"},
    "ranker": {"1/model.txt", "model.toml"},
    "digits": {"1/model.onnx"},
}


@dataclass(frozen=True)
class Built:
    root: Path
    examples: dict[str, Example]
    seconds: float


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("demo")
    start = time.perf_counter()
    examples = build_demo_repository(root)
    seconds = time.perf_counter() - start
    print(f"demo repository built in {seconds:.2f} s")
    return Built(root, {e.name: e for e in examples}, seconds)


@pytest.fixture(scope="module")
def dataplane(built: Built) -> Iterator[DataPlane]:
    plane = DataPlane(ModelRepository(built.root))
    asyncio.run(plane.start())
    yield plane
    plane.close()


def infer(plane: DataPlane, name: str, request: dict[str, Any]) -> dict[str, np.ndarray]:
    """Run ``request`` (input name -> nested list or array) on ``name``; the outputs by name."""
    signature = plane.signature(name)
    inputs = []
    for input_name, value in request.items():
        spec = signature.input(input_name)
        assert spec is not None, f"{name} has no input {input_name!r}"
        shape = [len(value)] if spec.datatype == "BYTES" else list(np.asarray(value).shape)
        inputs.append(RequestInput(input_name, spec.datatype, shape, value))
    response = asyncio.run(plane.infer(InferenceRequest(name, inputs)))
    return {output.name: output.data for output in response.outputs}


def run_example(plane: DataPlane, example: Example) -> tuple[dict[str, np.ndarray], str]:
    outputs = infer(plane, example.name, example.request)
    return outputs, example.explain(outputs)


# -- building ----------------------------------------------------------------------------------------------
def test_builds_within_bound(built: Built) -> None:
    assert built.seconds < MAX_BUILD_SECONDS


def test_examples_come_back_in_order_with_their_names(built: Built) -> None:
    assert list(built.examples) == [module.NAME for module in EXAMPLES] == ["spam", "eta", "ranker", "digits"]


@pytest.mark.parametrize("name", list(LAYOUT))
def test_example_is_described_and_json_able(built: Built, name: str) -> None:
    example = built.examples[name]
    assert example.description
    assert "\n" not in example.description
    assert json.loads(json.dumps(example.request)) == example.request


@pytest.mark.parametrize(("name", "files"), list(LAYOUT.items()))
def test_folder_layout(built: Built, name: str, files: set[str]) -> None:
    folder = built.root / name
    found = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert found == files


def test_rebuild_replaces_old_content_and_is_deterministic(built: Built, tmp_path: Path) -> None:
    stale = tmp_path / "eta" / "2" / "model.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    (tmp_path / "digits").write_text("a file where a folder belongs")
    build_demo_repository(tmp_path)
    assert not stale.parent.exists()
    assert _digests(tmp_path) == _digests(built.root)
    # skops names the parts of a file after object ids, so the same model gives other bytes: compare answers.
    texts, _ = spam.make_messages(50, seed=1)
    rebuilt, original = (sio.load(root / "spam" / "1" / "model.skops") for root in (tmp_path, built.root))
    assert np.array_equal(rebuilt.predict_proba(texts), original.predict_proba(texts))


def _digests(root: Path) -> dict[str, str]:
    """The digest of each file but skops files, by path."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in root.rglob("*")
        if path.is_file() and path.suffix != ".skops"
    }


# -- loading and serving -----------------------------------------------------------------------------------
def test_every_model_loads_ready(built: Built) -> None:
    repository = ModelRepository(built.root)
    models = repository.load_all()
    assert [m.name for m in models] == sorted(LAYOUT)
    problems = [
        f"{m.name}: {m.reason or '; '.join(f'v{v.version} {v.state}: {v.reason}' for v in m.versions.values())}"
        for m in models
        if m.reason or not m.versions or any(v.state is not State.READY for v in m.versions.values())
    ]
    assert not problems, "\n".join(problems)


def test_spam_example_is_spam(dataplane: DataPlane, built: Built) -> None:
    outputs, sentence = run_example(dataplane, built.examples["spam"])
    assert outputs["label"].tolist() == [b"spam"]
    assert outputs["probabilities"].shape == (1, 2)
    assert re.fullmatch(r"spam \(p=(0\.[5-9]\d|1\.00)\)", sentence), sentence


def test_eta_example_is_plausible(dataplane: DataPlane, built: Built) -> None:
    example = built.examples["eta"]
    outputs, sentence = run_example(dataplane, example)
    expected = eta.trip_minutes(np.asarray(example.request["input"], dtype=np.float32))
    assert outputs["prediction"] == pytest.approx(expected, rel=0.15)
    assert re.fullmatch(r"ETA \d+\.\d min", sentence), sentence


def test_ranker_example_puts_the_best_match_first(dataplane: DataPlane, built: Built) -> None:
    outputs, sentence = run_example(dataplane, built.examples["ranker"])
    assert outputs["score"].shape == (4,)
    match = re.fullmatch(r"ranking: item (\d) > item (\d) > item (\d) > item (\d)", sentence)
    assert match, sentence
    order = [int(i) for i in match.groups()]
    assert sorted(order) == [0, 1, 2, 3]
    assert order[0] == 2  # the favourite category, new, clicked before
    assert order[-1] == 1  # off-topic, unpopular, stale


def test_digits_example_is_its_true_digit(dataplane: DataPlane, built: Built) -> None:
    outputs, sentence = run_example(dataplane, built.examples["digits"])
    truth = digits.request_label()
    assert outputs["label"].tolist() == [truth]
    assert outputs["probabilities"].shape == (1, 10)
    assert re.fullmatch(rf"digit {truth} \(p=(0\.[5-9]\d|1\.00)\)", sentence), sentence


# -- quality on held-out data, as served ---------------------------------------------------------------------
def test_spam_accuracy_on_fresh_messages(dataplane: DataPlane) -> None:
    texts, labels = spam.make_messages(1000, seed=2024)
    predicted = infer(dataplane, "spam", {"text": texts})["label"]
    assert np.mean([p.decode() == t for p, t in zip(predicted, labels, strict=True)]) > 0.9


def test_eta_r2_on_fresh_trips(dataplane: DataPlane) -> None:
    features, minutes = eta.make_trips(2000, seed=2024)
    predicted = infer(dataplane, "eta", {"input": features})["prediction"]
    r2 = 1.0 - np.sum((minutes - predicted) ** 2) / np.sum((minutes - minutes.mean()) ** 2)
    assert r2 > 0.8


def test_ranker_ndcg_well_above_random(dataplane: DataPlane) -> None:
    features, labels, groups = ranker.make_sessions(200, seed=2024)
    scores = infer(dataplane, "ranker", {"input": features})["score"]
    random_scores = np.random.default_rng(0).random(len(scores))
    model_ndcg = _mean_ndcg_at_5(labels, scores, groups)
    random_ndcg = _mean_ndcg_at_5(labels, random_scores, groups)
    assert model_ndcg > 0.85
    assert model_ndcg > random_ndcg + 0.15


def _mean_ndcg_at_5(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    bounds = np.cumsum(groups)[:-1]
    per_query = [
        ndcg_score([query_labels], [query_scores], k=5)
        for query_labels, query_scores in zip(np.split(labels, bounds), np.split(scores, bounds), strict=True)
    ]
    return float(np.mean(per_query))


def test_digits_accuracy_on_held_out_split(dataplane: DataPlane) -> None:
    _, x_test, _, y_test = digits.load_split()
    predicted = infer(dataplane, "digits", {"input": x_test})["label"]
    assert np.mean(predicted == y_test) > 0.9
