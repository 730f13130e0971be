"""The ``[options]`` table of model.toml, one schema per runtime.

They live here, apart from the runtime modules, so that checking a model.toml and writing the reference
(docs/reference.md, from ``scripts/generate_reference.py``) need no framework: the runtime modules import
onnxruntime, torch, XGBoost... The registry checks a model's ``[options]`` against ``OPTIONS[runtime]`` and hands
the result to the runtime's ``load``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class OnnxOptions(_Options):
    intra_op_threads: int = Field(default=1, ge=0)
    """Threads one inference may use. 1 suits small models on small machines, where requests run side by
    side on the server's threads; 0 lets onnxruntime use every core."""
    inter_op_threads: int = Field(default=1, ge=0)
    """Threads that run independent branches of the graph at once (onnxruntime's ``inter_op_num_threads``);
    0 lets onnxruntime choose."""
    graph_optimization: str = Field(default="all", pattern="^(disabled|basic|extended|all)$")
    """How far onnxruntime rewrites the graph when it loads it: ``disabled``, ``basic``, ``extended`` or
    ``all``."""


class EmbeddingsOptions(_Options):
    intra_op_threads: int = Field(default=1, ge=0)
    """Threads one batch of the encoder may use (onnxruntime's ``intra_op_num_threads``); 0 lets onnxruntime use
    every core."""
    inter_op_threads: int = Field(default=1, ge=0)
    """Threads that run independent branches of the encoder's graph at once; 0 lets onnxruntime choose."""
    encoder_threads: int = Field(default=0, ge=0)
    """Encoder calls of one batch (each at most 16 texts of about the same length) that run at once, on threads
    sharing the session; 0: one per core this process may use. Each call runs on ``intra_op_threads`` threads of
    its own: keep one of the two at 1."""
    max_length: int | None = Field(default=None, ge=1)
    """Tokens per text, special tokens included: longer texts are truncated to their first ``max_length`` tokens.
    Default: ``max_seq_length`` of the model's ``sentence_bert_config.json`` (256 for all-MiniLM-L6-v2), else 512."""
    normalize: bool | None = None
    """Scale each embedding to unit length; default: whether the model's ``modules.json`` lists a Normalize
    module."""


class SklearnOptions(_Options):
    allow_pickle: bool = False
    """Load a joblib/pickle file. Unpickling runs code stored in the file: only for files you trust."""
    trusted_types: list[str] = Field(default_factory=list)
    """Types a skops file may hold beyond those skops trusts by default."""


class XGBoostOptions(_Options):
    nthread: int = Field(default=1, ge=0)
    """Threads one prediction may use. 1 suits small machines, where requests run side by side on the
    server's threads; 0 lets XGBoost use every core."""


class LightGBMOptions(_Options):
    num_threads: int = Field(default=1, ge=0)
    """Threads one prediction may use. 1 suits small machines, where requests run side by side on the
    server's threads; 0 lets LightGBM use its default (every core)."""


class TorchOptions(_Options):
    num_threads: int = Field(default=1, ge=0)
    """Threads torch uses for one operation; 0 leaves torch's default (one per core). ``torch.set_num_threads``
    is process-wide: every torch model in the server shares the setting, and the model loaded last decides
    it. 1 suits small models, where requests run side by side on the server's threads."""


class PythonOptions(_Options):
    class_name: str | None = None
    """The class to serve; by default ``Model``, or the only class in model.py that has ``predict``."""


class LlamaCppOptions(_Options):
    threads: int = Field(default=0, ge=0)
    """Threads llama.cpp computes with, for prompts and decode steps alike; 0: chosen as the model runs, one per
    core or one per core but one, whichever decodes faster now (inferd.generation.threads). The threads meet at a
    barrier per layer, so one of them preempted stalls the whole step: on 2 cores, 8 streams gave 133 tokens/s
    with 2 threads and 79 with 1 when the cores were free, but with six other busy processes a decode step over 8
    sequences took 2,549 ms with 2 threads and 228 ms with 1."""
    extra_buffers: bool = False
    """llama.cpp's extra weight buffer types (AMX tiles on Xeons that have them, repacked weights). Off by
    default: its AMX matrix multiply crashes the process on machines (VMs) whose CPU reports AMX without granting
    the tile state, on every batch of more than one token."""


class EchoLLMOptions(_Options):
    delay_ms: float = Field(default=0.0, ge=0)
    """Sleep of each prefill and each batched decode step, a stand-in for compute."""
    fail_after: int = Field(default=0, ge=0)
    """Raise on every this many-th decode step (counted over the model's life; 0: never), to test failures."""


OPTIONS: dict[str, type[BaseModel]] = {
    "onnx": OnnxOptions,
    "embeddings": EmbeddingsOptions,
    "sklearn": SklearnOptions,
    "xgboost": XGBoostOptions,
    "lightgbm": LightGBMOptions,
    "torch": TorchOptions,
    "python": PythonOptions,
    "llama_cpp": LlamaCppOptions,
    "echo_llm": EchoLLMOptions,
}
"""The ``[options]`` schema of each runtime, by the runtime's name in the registry."""
