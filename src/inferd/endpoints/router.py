"""Picking a variant, and the call that carries a request to it.

A :class:`RoutingTable` is immutable: a change builds a new one and swaps it in one assignment on the event
loop, so a request sees the table before a change or after it, never half of one. Each endpoint's live
variants are laid out on [0, 1) by weight; a request takes a uniform draw (or, with a route key, the key's
stable hash, so the same key lands on the same variant while the weights stay) and the variant it falls in.
"""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

from inferd.calls import Call, Routing
from inferd.endpoints.model import Endpoint, Variant
from inferd.endpoints.stats import VariantStats
from inferd.errors import not_found

if TYPE_CHECKING:
    from inferd.loading import Loaded
    from inferd.scheduling.scheduler import RunResult
    from inferd.signature import Signature

_SPAN = float(1 << 64)


def key_point(key: str) -> float:
    """Where a route key falls on [0, 1): the same for every process and restart (no per-process hash seed)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SPAN


class Target:
    """A live variant as requests reach it: what the routed call needs, looked up once per table, not per
    request."""

    __slots__ = ("model", "shown", "stats", "variant", "version")

    def __init__(self, endpoint: str, variant: Variant, stats: VariantStats) -> None:
        self.variant = variant
        self.model = variant.model
        self.version = variant.version_text
        self.stats = stats
        self.shown: Mapping[str, str] = {"endpoint": endpoint, "variant": variant.name}
        """The V2 response parameters of the requests it answers (:attr:`Routing.shown`: a dict, as orjson
        writes no other mapping, never changed)."""


@dataclass(frozen=True, slots=True)
class Compiled:
    """One endpoint as the router uses it."""

    endpoint: Endpoint
    live: tuple[Variant, ...]
    bounds: tuple[float, ...]
    """The cumulative share of each live variant, the last exactly 1.0."""
    shadows: tuple[Variant, ...]
    stats: Mapping[str, VariantStats]
    """Each variant's statistics, by name (kept by the endpoints across changes)."""
    targets: tuple[Target, ...]
    """Each live variant (in the order of ``live``) with its statistics."""

    @classmethod
    def of(cls, endpoint: Endpoint, stats: Mapping[tuple[str, str], VariantStats] | None = None) -> Compiled:
        live = endpoint.live
        total = sum(v.weight for v in live)
        bounds, running = [], 0.0
        for variant in live:
            running += variant.weight
            bounds.append(running / total)
        bounds[-1] = 1.0
        found = {v.name: stats[endpoint.name, v.name] if stats is not None else VariantStats()
                 for v in endpoint.variants}
        targets = tuple(Target(endpoint.name, v, found[v.name]) for v in live)
        return cls(endpoint, live, tuple(bounds), endpoint.shadows, found, targets)

    def choose(self, forced: str | None, key: str | None, draw: Callable[[], float] = random.random) -> Target:
        """The variant a request goes to: the forced one (NOT_FOUND naming the live variants when it is not
        one), else by weight, with the route key's point in place of a random draw."""
        if forced is not None:
            for target in self.targets:
                if target.variant.name == forced:
                    return target
            listed = ", ".join(repr(v.name) for v in self.live)
            raise not_found(f"endpoint {self.endpoint.name!r} has no variant {forced!r}; its variants: {listed}")
        # the point is in [0, 1) and the last bound is exactly 1.0: the index is always a live variant's
        return self.targets[bisect_right(self.bounds, key_point(key) if key is not None else draw())]

    def pick(self, forced: str | None, key: str | None, draw: Callable[[], float] = random.random) -> Variant:
        """:meth:`choose`'s variant."""
        return self.choose(forced, key, draw).variant

    def weights(self) -> dict[str, float]:
        """Each live variant's share of traffic, in percent."""
        previous, found = 0.0, {}
        for variant, bound in zip(self.live, self.bounds, strict=True):
            found[variant.name] = round((bound - previous) * 100, 6)
            previous = bound
        return found


@dataclass(frozen=True, slots=True)
class RoutingTable:
    endpoints: Mapping[str, Compiled]

    @classmethod
    def of(cls, endpoints: Mapping[str, Endpoint],
           stats: Mapping[tuple[str, str], VariantStats] | None = None) -> RoutingTable:
        return cls({name: Compiled.of(e, stats) for name, e in endpoints.items()})


class Tap:
    """What a shadow copy needs from the live request: its arrays and the live answer's outputs."""

    __slots__ = ("arrays", "outputs", "rows")

    def __init__(self) -> None:
        self.arrays: dict[str, Any] | None = None
        self.rows = 0
        self.outputs: dict[str, Any] | None = None


class RoutedCall:
    """A request that named an endpoint, on its way to one variant: the inner call, with the variant's model
    and version. It prepares and answers as the inner call does (its very methods: no frame of its own on the
    hot path). It is also the request's answer callback: it counts the outcome in its variant's statistics, then
    hands it on."""

    __slots__ = ("_answer", "_latency", "_started", "_stats", "inner", "model_name", "model_version", "prepare",
                 "respond", "routing")

    def __init__(self, inner: Call[Any], target: Target, routing: Routing, started: int,
                 answer: Callable[[Any], None]) -> None:
        self.inner = inner
        self.model_name = target.model
        self.model_version = target.version
        self.routing: Routing | None = routing
        self.prepare: Callable[[Loaded, int], Any] = inner.prepare
        self.respond: Callable[[str, Signature, Any, RunResult], Any] = inner.respond
        self._stats = target.stats
        self._latency = target.stats.latency
        self._started = started
        self._answer = answer

    def route(self) -> Routing:
        assert self.routing is not None
        return self.routing

    def __call__(self, outcome: Any) -> None:
        if isinstance(outcome, BaseException):
            self._stats.errors += 1
        self._latency.add(perf_counter_ns() - self._started)  # VariantStats.record, one call less
        self._answer(outcome)


class TappedCall(RoutedCall):
    """A routed request sampled for shadow variants: a :class:`Tap` keeps its arrays and the live answer's
    outputs, and once the caller has its answer, :attr:`after` queues the shadow copies."""

    __slots__ = ("after", "tap")

    def __init__(self, inner: Call[Any], target: Target, routing: Routing, started: int,
                 answer: Callable[[Any], None]) -> None:
        super().__init__(inner, target, routing, started, answer)
        self.tap = Tap()
        self.after: Callable[[Any], None] | None = None
        self.prepare = self._prepare
        self.respond = self._respond

    def _prepare(self, loaded: Loaded, max_elements: int) -> Any:
        prepared = self.inner.prepare(loaded, max_elements)
        self.tap.arrays, self.tap.rows = prepared.arrays, prepared.rows
        return prepared

    def _respond(self, version: str, signature: Signature, prepared: Any, result: RunResult) -> Any:
        self.tap.outputs = {name: result.output(name) for name in signature.output_name_tuple}
        return self.inner.respond(version, signature, prepared, result)

    def __call__(self, outcome: Any) -> None:
        super().__call__(outcome)
        if self.after is not None:
            self.after(outcome)
