"""Batch inference jobs: score files of records through the DataPlane, resumably.

.. code-block:: python

    from inferd.batch import BatchOptions, run_batch

    summary = run_batch("models", "digits", "data/", "preds/", BatchOptions(batch_size=512, key="id"))
    print(summary.rows_out, summary.rows_failed, summary.rows_per_s)

See ``docs/batch.md``. The names below are imported on first use: a server imports
:mod:`inferd.batch.server_jobs` at every start, and the machinery of a job only when one runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inferd.batch.job import BatchSummary, ThresholdError
    from inferd.batch.options import BatchError, BatchOptions
    from inferd.batch.progress import Progress
    from inferd.batch.run import run_batch

__all__ = ["BatchError", "BatchOptions", "BatchSummary", "Progress", "ThresholdError", "run_batch"]

_HOMES = {"BatchSummary": "job", "ThresholdError": "job", "BatchError": "options", "BatchOptions": "options",
          "Progress": "progress", "run_batch": "run"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"inferd.batch.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
