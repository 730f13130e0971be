"""What a model's worker processes may take: how long one call may run, and when a worker is replaced by a
fresh one (after so many calls, or once its resident memory passes a limit: for models that leak)."""

from __future__ import annotations

import os
from dataclasses import dataclass

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True, slots=True)
class WorkerLimits:
    timeout_s: float = 0.0
    """Longest one call may run; then the worker is killed and replaced (0: no limit)."""
    max_requests: int = 0
    """Calls a worker serves before it is replaced (0: no limit)."""
    max_rss_mb: int = 0
    """Resident memory, in MiB, above which a worker is replaced after its call (0: no limit; Linux only)."""

    def recycle_reason(self, served: int, pid: int) -> str:
        """Why a worker that has just answered its ``served``-th call should be replaced, else empty."""
        if self.max_requests and served >= self.max_requests:
            return f"it has served {served} calls (max_requests)"
        if self.max_rss_mb:
            rss = resident_mb(pid)
            if rss > self.max_rss_mb:
                return f"its resident memory is {rss:.0f} MiB, over max_rss_mb {self.max_rss_mb}"
        return ""


def resident_mb(pid: int) -> float:
    """A process's resident memory in MiB, read from /proc (0 where there is none, or the process is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE / 2**20
    except (OSError, IndexError, ValueError):
        return 0.0
