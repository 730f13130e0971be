"""The echo language model (:mod:`inferd.generation.echo`) as a runtime, for tests and demos: a model folder
with an empty ``model.echo`` file (or any file with ``runtime = "echo_llm"`` in model.toml)."""

from __future__ import annotations

from pathlib import Path

from inferd.generation.echo import EchoEngine
from inferd.runtimes.options import EchoLLMOptions


def load_engine(_artifact: Path, options: EchoLLMOptions, context: int, slots: int) -> EchoEngine:
    return EchoEngine(context=context, slots=slots, delay_ms=options.delay_ms, fail_after=options.fail_after)
