"""Build the demo model repository: one folder per example model, each trained from seeded or bundled data.

The result is deterministic (every random source is seeded) and needs no network. Each example module
exposes ``NAME`` and ``build(model_folder) -> Example``; the :class:`Example` it returns carries a real
request for the model and a function that reads the model's outputs back as one sentence.

Optional examples (:data:`OPTIONAL_EXAMPLES`) need an extra beyond ``demo``; each also exposes ``DESCRIPTION``,
``EXTRA`` (the extra to install) and ``REQUIRES`` (the modules its build imports, checked without importing them).
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]


@dataclass(frozen=True)
class Example:
    """A built demo model and how to talk to it."""

    name: str
    """Model name, which is also its folder name in the repository."""
    description: str
    """One line: what a user would call the model."""
    request: dict[str, list[Any]]
    """One real request: input name -> nested list (JSON-able)."""
    explain: Callable[[dict[str, np.ndarray]], str]
    """The model's outputs (output name -> array, as the DataPlane returns them) as one human sentence."""


# The example modules import Example from here, so they are imported after it is defined.
from inferd.examples import digits, eta, minilm, ranker, smollm2, spam  # noqa: E402

EXAMPLES: tuple[ModuleType, ...] = (spam, eta, ranker, digits)
OPTIONAL_EXAMPLES: tuple[ModuleType, ...] = (minilm, smollm2)
"""Built by ``inferd demo`` when their extra is installed (their modules import their frameworks lazily)."""


def installed(module: ModuleType) -> bool:
    """Whether every module an optional example's build needs is installed (its own ``available()`` when it has
    one: the chat model also needs its packaged weights)."""
    available = getattr(module, "available", None)
    if available is not None:
        return bool(available())
    return all(importlib.util.find_spec(name) is not None for name in module.REQUIRES)


def build_demo_repository(root: Path, optional: bool = False) -> list[Example]:
    """Write every example model under ``root/<name>/``, replacing what is there; return them in order. With
    ``optional``, also the optional examples whose extra is installed, after the others."""
    root.mkdir(parents=True, exist_ok=True)
    modules = [*EXAMPLES, *(m for m in OPTIONAL_EXAMPLES if optional and installed(m))]
    # The models are small: one BLAS/OpenMP thread each is faster than contending for cores, and the same on
    # every machine.
    with threadpool_limits(limits=1):
        return [_build_one(module, root / module.NAME) for module in modules]


def _build_one(module: ModuleType, folder: Path) -> Example:
    if folder.is_dir():
        shutil.rmtree(folder)
    elif folder.exists():
        folder.unlink()
    (folder / "1").mkdir(parents=True)
    example: Example = module.build(folder)
    return example
