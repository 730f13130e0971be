"""What each endpoint variant did: requests, errors, latency, and for a shadow variant how its answers compared.

Counters are plain integers changed on the event loop (as :mod:`inferd.stats`). They outlive routing-table
swaps (they are kept by endpoint and variant name), so a weight change does not reset them; the rollout reads
them over its bake window through :meth:`VariantStats.snapshot` and :func:`window`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from inferd.stats import DURATION_BOUNDS_NS, HistogramDuration


@dataclass(slots=True)
class VariantStats:
    errors: int = 0
    latency: HistogramDuration = field(default_factory=HistogramDuration)
    """Every answered request's duration, failures included (an alarm on p99 must see slow failures too); its
    count is the variant's requests."""
    # shadow variants only
    shadow_dropped: int = 0
    """Copies not run because the shadow queue was full."""
    compared: int = 0
    """Shadow answers compared with the live ones."""
    rows_compared: int = 0
    agreed: int = 0
    """Rows whose argmax (classifier scores) or label matched the live answer's."""
    abs_diff_sum: float = 0.0
    """Sum over comparisons of the mean absolute difference between the shadow's and the live outputs."""

    @property
    def requests(self) -> int:
        return self.latency.count

    def record(self, ns: int, ok: bool) -> None:
        if not ok:
            self.errors += 1
        self.latency.add(ns)

    def shadow_summary(self) -> dict[str, float | int | None]:
        return {"compared": self.compared, "dropped": self.shadow_dropped, "errors": self.errors,
                "agreement": self.agreed / self.rows_compared if self.rows_compared else None,
                "mean_abs_diff": self.abs_diff_sum / self.compared if self.compared else None}

    def snapshot(self) -> Snapshot:
        return Snapshot(self.requests, self.errors, tuple(self.latency.buckets))


@dataclass(frozen=True, slots=True)
class Snapshot:
    requests: int
    errors: int
    buckets: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Window:
    """What a variant did between two snapshots."""

    requests: int
    errors: int
    p99_s: float | None
    """The upper bound of the histogram bucket holding the 99th percentile (None: no request)."""

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def window(before: Snapshot, after: Snapshot) -> Window:
    counts = [b - a for a, b in zip(before.buckets, after.buckets, strict=True)]
    return Window(after.requests - before.requests, after.errors - before.errors, quantile_s(counts, 0.99))


def quantile_s(counts: list[int], q: float) -> float | None:
    total = sum(counts)
    if not total:
        return None
    rank, seen = q * total, 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return DURATION_BOUNDS_NS[index] / 1e9 if index < len(DURATION_BOUNDS_NS) else float("inf")
    return float("inf")
