"""Batch inference jobs: score files of records through the DataPlane, resumably.

.. code-block:: python

    from inferd.batch import BatchOptions, run_batch

    summary = run_batch("models", "digits", "data/", "preds/", BatchOptions(batch_size=512, key="id"))
    print(summary.rows_out, summary.rows_failed, summary.rows_per_s)

See ``docs/batch.md``.
"""

from inferd.batch.job import BatchSummary, ThresholdError
from inferd.batch.options import BatchError, BatchOptions
from inferd.batch.progress import Progress
from inferd.batch.run import run_batch

__all__ = ["BatchError", "BatchOptions", "BatchSummary", "Progress", "ThresholdError", "run_batch"]
