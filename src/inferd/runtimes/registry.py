"""Which runtime serves which artifact, and loading a runtime module only when a model needs it.

Frameworks are optional extras. Nothing here imports them: a runtime's module is imported when the first
model that needs it loads, and a missing framework becomes a message naming the extra to install.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferd.config import validate_options
from inferd.runtimes.base import Runtime
from inferd.runtimes.options import OPTIONS
from inferd.signature import Signature


class MissingExtraError(RuntimeError):
    """A model needs a framework that is not installed."""


@dataclass(frozen=True, slots=True)
class RuntimeInfo:
    name: str
    module: str
    artifacts: tuple[str, ...]
    extra: str
    requires: tuple[str, ...]
    """Top-level modules the runtime imports; checked before importing the runtime module."""
    batches_by_default: bool = False
    """Dynamic batching (with no queue delay) for its batch-capable models whose model.toml and server
    settings do not say. ONNX graphs: rows are independent and a batch costs little more than one row, and
    Triton's ONNX Runtime backend does the same for the models it configures itself."""
    generative: bool = False
    """A language model: its module has ``load_engine`` instead of ``load``, and a generation scheduler serves it
    (see :mod:`inferd.generation`)."""
    columns_are_rows: bool = False
    """Its one-dimensional ``[-1]`` inputs are one value per row, so ``batches_by_default`` applies to them too
    (which it does not for other runtimes, where such an input may be a sequence)."""
    by_file_name: bool = True
    """Whether its artifact names choose it for a folder whose model.toml names no runtime. The embeddings
    runtime reads a ``model.onnx`` too, with a tokenizer beside it: model.toml says ``runtime = "embeddings"``."""


RUNTIMES: dict[str, RuntimeInfo] = {
    info.name: info
    for info in (
        RuntimeInfo("onnx", "inferd.runtimes.onnx", ("model.onnx",), "onnx", ("onnxruntime",),
                    batches_by_default=True),
        RuntimeInfo("embeddings", "inferd.runtimes.embeddings", ("model.onnx",), "embeddings",
                    ("onnxruntime", "tokenizers"), batches_by_default=True, columns_are_rows=True,
                    by_file_name=False),
        RuntimeInfo("sklearn", "inferd.runtimes.sklearn", ("model.skops", "model.joblib", "model.pkl"),
                    "sklearn", ("sklearn", "skops")),
        RuntimeInfo("xgboost", "inferd.runtimes.xgboost", ("model.json", "model.ubj"), "xgboost", ("xgboost",)),
        RuntimeInfo("lightgbm", "inferd.runtimes.lightgbm", ("model.txt",), "lightgbm", ("lightgbm",)),
        RuntimeInfo("torch", "inferd.runtimes.torch", ("model.pt", "model.pt2"), "torch", ("torch",)),
        RuntimeInfo("python", "inferd.runtimes.python", ("model.py",), "", ()),
        RuntimeInfo("llama_cpp", "inferd.runtimes.llama_cpp", ("model.gguf",), "llm", ("llama_cpp",),
                    generative=True),
        RuntimeInfo("echo_llm", "inferd.runtimes.echo_llm", ("model.echo",), "", (), generative=True),
    )
}

KNOWN_ARTIFACTS: dict[str, RuntimeInfo] = {
    name: info for info in RUNTIMES.values() if info.by_file_name for name in info.artifacts
}


def runtime_named(name: str) -> RuntimeInfo:
    try:
        return RUNTIMES[name]
    except KeyError:
        raise ValueError(f"unknown runtime {name!r}; known runtimes: {', '.join(RUNTIMES)}") from None


def runtime_for_artifact(filename: str) -> RuntimeInfo | None:
    return KNOWN_ARTIFACTS.get(filename)


def check_installed(info: RuntimeInfo) -> None:
    missing = [m for m in info.requires if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtraError(
            f"the {info.name} runtime needs {', '.join(missing)}, which is not installed; "
            f"install it with: pip install 'inferd[{info.extra}]'"
        )


def load_engine(info: RuntimeInfo, artifact: Path, config_folder: Path, options: dict[str, Any],
                context: int, slots: int) -> Any:
    """A generative runtime's engine (an :class:`inferd.generation.engine.Engine`) for ``slots`` sequences of
    ``context`` tokens."""
    check_installed(info)
    checked = validate_options(config_folder, options, OPTIONS[info.name])
    module = importlib.import_module(info.module)
    return module.load_engine(artifact, checked, context, slots)


def load_runtime(info: RuntimeInfo, artifact: Path, config_folder: Path, options: dict[str, Any],
                 override: Signature | None) -> Runtime:
    """Check the model's options, import the runtime's module, and load the artifact."""
    check_installed(info)
    checked = validate_options(config_folder, options, OPTIONS[info.name])
    module = importlib.import_module(info.module)
    runtime: Runtime = module.load(artifact, checked, override)
    return runtime
