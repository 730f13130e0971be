"""GGUF language models on llama.cpp (the ``llm`` extra): a generative runtime, served by the generation
scheduler (:mod:`inferd.generation`)."""

from __future__ import annotations

from pathlib import Path

from inferd.generation.llama import LlamaEngine
from inferd.runtimes.options import LlamaCppOptions


def load_engine(artifact: Path, options: LlamaCppOptions, context: int, slots: int) -> LlamaEngine:
    return LlamaEngine(artifact, context=context, slots=slots, threads=options.threads,
                       extra_buffers=options.extra_buffers)
