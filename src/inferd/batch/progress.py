"""Progress of a batch job: rows done and failed, rows per second and the time left, as the CLI and the HTTP
status report them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Progress:
    rows_done: int
    """Rows scored so far, including those an earlier, interrupted run finished."""
    rows_failed: int
    rows_total: int | None
    """All rows of the input: exact for Parquet, estimated from the bytes read for CSV and JSON Lines,
    None until an estimate is possible."""
    total_is_estimate: bool
    elapsed_s: float
    rows_per_s: float
    """Rows scored by this run per second."""
    eta_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Tracker:
    """Counts rows as mini-batches complete (thread-safe) and turns them into :class:`Progress`."""

    def __init__(self, rows_total: int | None, bytes_total: int) -> None:
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._exact_total = rows_total
        self._bytes_total = bytes_total
        self._bytes_read = 0
        self._rows_read = 0
        self._resumed = 0
        self.rows_done = 0
        self.rows_failed = 0
        self.listener: Callable[[Progress], None] | None = None
        """Called with the progress after each mini-batch."""

    def resumed(self, rows: int, failed: int) -> None:
        """Rows an earlier run finished: counted as done, not in the rate."""
        with self._lock:
            self._resumed += rows
            self.rows_done += rows
            self.rows_failed += failed

    def add(self, rows: int, failed: int) -> None:
        with self._lock:
            self.rows_done += rows
            self.rows_failed += failed
        if self.listener is not None:
            self.listener(self.snapshot())

    def read_to(self, bytes_read: int, rows_read: int) -> None:
        """How far the readers have got over all files, in bytes and rows (to estimate CSV and JSONL rows)."""
        with self._lock:
            self._bytes_read = max(self._bytes_read, bytes_read)
            self._rows_read = max(self._rows_read, rows_read)

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def snapshot(self) -> Progress:
        with self._lock:
            elapsed = self.elapsed()
            rate = (self.rows_done - self._resumed) / elapsed if elapsed > 0 else 0.0
            total, estimate = self._total()
            eta = (total - self.rows_done) / rate if total is not None and rate > 0 else None
            return Progress(self.rows_done, self.rows_failed, total, estimate, elapsed, rate,
                            max(eta, 0.0) if eta is not None else None)

    def _total(self) -> tuple[int | None, bool]:
        if self._exact_total is not None:
            return self._exact_total, False
        if not self._bytes_read or not self._bytes_total or not self._rows_read:
            return None, True
        fraction = min(self._bytes_read / self._bytes_total, 1.0)
        return max(int(self._rows_read / fraction), self.rows_done), True
