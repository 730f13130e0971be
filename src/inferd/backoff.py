"""Retry delays: the first wait, doubled after each further failure, up to a cap (job retries, callback
deliveries, worker-process respawns)."""

from __future__ import annotations


def doubling_delay(first_s: float, attempt: int, cap_s: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): ``first_s``, then twice as long each
    time, never more than ``cap_s``."""
    return float(min(first_s * 2 ** (attempt - 1), cap_s))
