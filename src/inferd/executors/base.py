"""Where a model's predict runs. The scheduler hands an executor one (possibly merged) batch at a time and
never more batches at once than the executor has instances."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np


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

    def close(self) -> None: ...
