"""What a model's scheduler does, resolved from model.toml and the server's defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SchedulingPolicy:
    max_batch_size: int = 0
    """Rows per merged batch (and per request); 0 for a model without a batch dimension."""
    dynamic_batching: bool = False
    max_queue_delay_us: int = 0
    """How long the first request of a batch may wait for others to join it: at most this, never more. Event
    loops wake in whole milliseconds, so the wait is this less up to 1 ms; under 1 ms it means "whatever else
    has arrived by the next turn of the event loop". 0 waits for no time: a batch is the requests that
    arrived in the same turn of the event loop (plus, for a busy instance, those that queued meanwhile)."""
    preferred_batch_sizes: tuple[int, ...] = ()
    """Batch sizes worth dispatching at once rather than waiting for more."""
    max_queue_size: int = 1024
    """Requests that may wait; one more is refused at once (UNAVAILABLE, HTTP 503 with Retry-After)."""
    default_timeout_us: int = 0
    """How long a request may wait in the queue when it does not say; 0: no limit."""
    priority_levels: int = 1
    default_priority: int = 1
    """Priority of requests that give none (1 is the highest level)."""

    def priority_level(self, requested: object) -> int:
        """The queue level (0-based) for a request's ``priority`` parameter; 0 or absent is the default."""
        if requested is None or requested == 0:
            return self.default_priority - 1
        if not isinstance(requested, int) or isinstance(requested, bool) or not 1 <= requested <= self.priority_levels:
            from inferd.errors import invalid

            raise invalid(f"priority must be an integer from 1 (highest) to {self.priority_levels}, got {requested!r}")
        return requested - 1
