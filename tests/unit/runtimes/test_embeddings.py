"""The embeddings runtime on a tiny ONNX encoder: tokenizing, pooling over the attention mask, normalising,
truncating, the signature contract, and the errors that name the file at fault."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedding_models import VOCAB, WIDTH, token_table, write_tiny_encoder
from inferd.dataplane import DataPlane
from inferd.errors import ErrorCode, InferError
from inferd.inference import InferenceRequest, RequestInput
from inferd.repository import ModelRepository, State
from inferd.runtimes.base import Runtime
from inferd.runtimes.registry import RUNTIMES, load_runtime, runtime_for_artifact

pytest.importorskip("tokenizers")
pytest.importorskip("onnxruntime")
SUB_BATCH = pytest.importorskip("inferd.runtimes.embeddings").SUB_BATCH


def load(folder: Path, options: dict[str, Any] | None = None) -> Runtime:
    return load_runtime(RUNTIMES["embeddings"], folder / "model.onnx", folder, options or {}, None)


def texts(*values: str | bytes) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = [v.encode() if isinstance(v, str) else v for v in values]
    return array


def expected(text: str, modes: tuple[str, ...] = ("mean_tokens",), normalize: bool = True,
             limit: int = 8) -> np.ndarray:
    """The reference, by hand: [CLS] words [SEP] (truncated to ``limit``), looked up, pooled."""
    words = [VOCAB.index(w) if w in VOCAB else 1 for w in text.split()]
    ids = [2, *words[: limit - 2], 3]
    tokens = token_table()[ids]
    parts = {"mean_tokens": tokens.mean(0), "cls_token": tokens[0], "max_tokens": tokens.max(0),
             "mean_sqrt_len_tokens": tokens.sum(0) / np.sqrt(len(ids))}
    vector = np.concatenate([parts[m] for m in modes])
    return vector / np.linalg.norm(vector) if normalize else vector


def test_signature_is_the_embeddings_contract(tmp_path):
    runtime = load(write_tiny_encoder(tmp_path / "m"))
    assert [(s.name, s.datatype, s.shape) for s in runtime.signature.inputs] == [("text", "BYTES", (-1,))]
    assert [(s.name, s.datatype, s.shape) for s in runtime.signature.outputs] == [
        ("embedding", "FP32", (-1, WIDTH)), ("token_count", "INT64", (-1,))]


def test_mean_pooling_over_the_mask_and_normalised(tmp_path):
    runtime = load(write_tiny_encoder(tmp_path / "m"))
    batch = ["hello world", "tax", "hi hi law world unknown"]
    out = runtime.predict({"text": texts(*batch)})
    assert out["embedding"].dtype == np.float32
    np.testing.assert_allclose(out["embedding"], np.stack([expected(t) for t in batch]), atol=1e-6)
    assert out["token_count"].tolist() == [4, 3, 7]
    # padding to the longest row changes nothing: each text alone gives the same vector
    for text, row in zip(batch, out["embedding"], strict=True):
        np.testing.assert_allclose(runtime.predict({"text": texts(text)})["embedding"][0], row, atol=1e-6)


def test_a_batch_beyond_one_encoder_call_comes_back_in_order(tmp_path):
    """Sorted by length and run SUB_BATCH texts per call, each row still gets its own vector, in place."""
    runtime = load(write_tiny_encoder(tmp_path / "m", max_seq_length=64))
    words = ["hello", "world", "hi", "tax", "law", "zebra"]
    batch = [" ".join(words[(i + j) % 6] for j in range((i * 7) % 23 + 1)) for i in range(3 * SUB_BATCH + 5)]
    out = runtime.predict({"text": texts(*batch)})
    np.testing.assert_allclose(out["embedding"], np.stack([expected(t, limit=64) for t in batch]), atol=1e-5)
    assert out["token_count"].tolist() == [min(len(t.split()) + 2, 64) for t in batch]
    empty = runtime.predict({"text": texts()})
    assert empty["embedding"].shape == (0, WIDTH)
    assert empty["token_count"].shape == (0,)


def test_long_texts_are_truncated_at_max_length(tmp_path):
    folder = write_tiny_encoder(tmp_path / "m", max_seq_length=4)
    long = "hello world hi tax law hello"
    out = load(folder).predict({"text": texts(long)})
    assert out["token_count"].tolist() == [4]
    np.testing.assert_allclose(out["embedding"][0], expected(long, limit=4), atol=1e-6)
    wider = load(folder, {"max_length": 16}).predict({"text": texts(long)})  # [options] max_length overrides
    assert wider["token_count"].tolist() == [8]


def test_the_default_max_length_without_sentence_bert_config(tmp_path):
    folder = write_tiny_encoder(tmp_path / "m", max_seq_length=None)
    out = load(folder).predict({"text": texts(" ".join(["hi"] * 600))})
    assert out["token_count"].tolist() == [512]


@pytest.mark.parametrize("modes", [("cls_token",), ("max_tokens",), ("mean_sqrt_len_tokens",),
                                   ("cls_token", "mean_tokens")])
def test_pooling_modes_from_the_pooling_config(tmp_path, modes):
    folder = write_tiny_encoder(tmp_path / "m", pooling={m: True for m in modes}, normalize=False)
    runtime = load(folder)
    assert runtime.signature.outputs[0].shape == (-1, WIDTH * len(modes))
    out = runtime.predict({"text": texts("hello world", "law")})
    np.testing.assert_allclose(out["embedding"], np.stack([expected(t, modes, normalize=False)
                                                           for t in ("hello world", "law")]), atol=1e-5)


def test_normalize_follows_modules_json_unless_options_say(tmp_path):
    plain = load(write_tiny_encoder(tmp_path / "plain", normalize=False)).predict({"text": texts("hello world")})
    np.testing.assert_allclose(plain["embedding"][0], expected("hello world", normalize=False), atol=1e-6)
    forced = load(write_tiny_encoder(tmp_path / "forced", normalize=False), {"normalize": True})
    assert np.linalg.norm(forced.predict({"text": texts("hello world")})["embedding"][0]) == pytest.approx(1.0)


def test_an_encoder_without_token_type_ids(tmp_path):
    folder = write_tiny_encoder(tmp_path / "m", inputs=("input_ids", "attention_mask"))
    out = load(folder).predict({"text": texts("hello world")})
    np.testing.assert_allclose(out["embedding"][0], expected("hello world"), atol=1e-6)


def test_invalid_utf8_is_the_callers_error(tmp_path):
    runtime = load(write_tiny_encoder(tmp_path / "m"))
    with pytest.raises(InferError, match="input 'text' row 1 is not valid UTF-8") as caught:
        runtime.predict({"text": texts("hello", b"\xff\xfe")})
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT


@pytest.mark.parametrize(("damage", "message"), [
    ("tokenizer", "needs tokenizer.json beside its model.onnx"),
    ("pooling", "pooling pooling_mode_weightedmean_tokens is not supported"),
    ("no_pooling", "no pooling mode is switched on"),
    ("inputs", "an embeddings encoder takes input_ids, attention_mask"),
    ("sentence_bert", "max_seq_length must be a positive integer"),
])
def test_folders_it_cannot_serve_say_why(tmp_path, damage, message):
    folder = write_tiny_encoder(tmp_path / "m", pooling={"mean_tokens": True},
                                inputs=("input_ids",) if damage == "inputs" else ("input_ids", "attention_mask"))
    if damage == "tokenizer":
        (folder / "tokenizer.json").unlink()
    if damage == "pooling":
        (folder / "1_Pooling" / "config.json").write_text('{"pooling_mode_weightedmean_tokens": true}')
    if damage == "no_pooling":
        (folder / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": false}')
    if damage == "sentence_bert":
        (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 0}')
    with pytest.raises(ValueError, match=message):
        load(folder)


def test_model_onnx_alone_stays_an_onnx_model():
    info = runtime_for_artifact("model.onnx")
    assert info is not None
    assert info.name == "onnx"


def test_served_from_a_repository_with_batching_on_by_default(tmp_path):
    root = tmp_path / "models"
    write_tiny_encoder(root / "tiny" / "1")
    (root / "tiny" / "model.toml").write_text('runtime = "embeddings"\n')
    plane = DataPlane(ModelRepository(root))
    asyncio.run(plane.start())
    try:
        assert plane.repository.find("tiny").versions[1].state is State.READY
        config = plane.model_config("tiny")
        assert config.platform == "embeddings"
        assert config.dynamic_batching is not None
        request = InferenceRequest("tiny", [RequestInput("text", "BYTES", [2], ["hello world", "law"])])
        response = asyncio.run(plane.infer(request))
        outputs = {o.name: o.data for o in response.outputs}
        np.testing.assert_allclose(outputs["embedding"], np.stack([expected("hello world"), expected("law")]),
                                   atol=1e-6)
        assert outputs["token_count"].tolist() == [4, 3]
    finally:
        plane.close()


@pytest.mark.parametrize("threads", [1, 3])
def test_encoder_calls_side_by_side_give_each_row_its_own_vector(tmp_path, threads):
    """With encoder_threads > 1 the calls of one batch run at once; the rows still come back in place."""
    runtime = load(write_tiny_encoder(tmp_path / "m", max_seq_length=64), {"encoder_threads": threads})
    words = ["hello", "world", "hi", "tax", "law", "zebra"]
    batch = [" ".join(words[(i + j) % 6] for j in range((i * 5) % 19 + 1)) for i in range(4 * SUB_BATCH + 3)]
    try:
        for _ in range(3):
            out = runtime.predict({"text": texts(*batch)})
            np.testing.assert_allclose(out["embedding"], np.stack([expected(t, limit=64) for t in batch]),
                                       atol=1e-5)
        assert runtime.predict({"text": texts("hello")})["embedding"].shape == (1, WIDTH)
    finally:
        runtime.close()


def test_encoder_threads_default_to_the_usable_cores(tmp_path):
    from inferd.runtimes.embeddings import usable_cores

    runtime: Any = load(write_tiny_encoder(tmp_path / "m"))
    try:
        assert runtime.encoder_threads == usable_cores() >= 1
    finally:
        runtime.close()
