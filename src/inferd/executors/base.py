"""Where a model's predict runs. The scheduler hands an executor one (possibly merged) batch at a time and
never more batches at once than the executor has instances."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np

from inferd.runtimes.base import ResponseSender


class Executor(Protocol):
    instances: int
    """How many batches may run at once."""

    @property
    def ready(self) -> bool:
        """Whether the executor can run a batch now (false while, say, a crashed worker is being replaced)."""
        ...

    async def run(self, inputs: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """Run predict on arrays already checked against the signature; raises InferError on failure."""
        ...

    def inline(self, rows: int) -> bool:
        """Whether a batch of so many rows runs inline on the event loop (:meth:`run_inline`): a model call too
        short to be worth a hand-off to a thread."""
        ...

    def run_inline(self, inputs: dict[str, np.ndarray], rows: int) -> Mapping[str, np.ndarray]:
        """:meth:`run`, on the caller's thread, for a batch :meth:`inline` accepted."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class StreamingExecutor(Protocol):
    """An executor that can run a decoupled model's request (in-process threads; worker processes cannot)."""

    async def stream(self, inputs: dict[str, np.ndarray], sender: ResponseSender) -> None:
        """Run the model on one request's arrays, its responses sent to ``sender`` as it makes them; returns when
        the model has finished (raises InferError when it failed, after the responses it sent)."""
        ...
