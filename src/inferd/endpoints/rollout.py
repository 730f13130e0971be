"""Staged rollout with automatic rollback: one background task per endpoint.

Traffic moves to the new variant in steps (canary, then the steps, then 100 %), each held for a bake period.
While a step bakes, the alarms read the endpoint's own per-variant statistics over the window since the step
began: the new variant's error rate above ``max_error_rate``, its p99 latency above ``max_p99_s``, or above
``p99_factor`` times the old variants' p99 over the same window. An alarm returns every request to the old
variants at once, records why, and marks the rollout failed; reaching 100 % marks it succeeded, the old variants
kept at weight 0 (a forced request still reaches them). Every step and decision is an event in the store.

One server process drives a rollout, holding a lease in the store (:mod:`inferd.endpoints.lease`). After a
restart, or when the driving process of several sharing a state folder dies, the process that takes the
rollout over rolls it back (see docs/endpoints.md): the bake window's statistics lived in the dead process, so
nothing justifies the next step, and a crash in the middle of a rollout is itself a reason to suspect the new
version.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from inferd.endpoints.lease import LEASE_S, RENEW_S
from inferd.endpoints.model import Endpoint, Variant, parse_endpoint
from inferd.endpoints.stats import Snapshot, window
from inferd.errors import InferError, invalid

if TYPE_CHECKING:
    from inferd.endpoints.service import Endpoints

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RolloutSpec:
    to: str
    """``MODEL`` or ``MODEL:VERSION``."""
    variant: str
    """The new variant's name."""
    steps: tuple[float, ...]
    """Traffic percentages of the new variant, the canary first, the last 100."""
    bake_s: float
    max_error_rate: float = 0.05
    max_p99_s: float | None = None
    p99_factor: float | None = None
    min_requests: int = 10
    """Fewer requests on the new variant in a window: too few to raise an error-rate or latency alarm."""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "steps": list(self.steps)}


def parse_rollout(body: dict[str, Any]) -> RolloutSpec:
    """A rollout from the admin API's body: ``to``, ``canary`` (percent, "10%" or 10), ``steps`` ("linear:25%"
    or a list of percentages), ``bake`` (seconds, or "5m", "30s"), and the alarm thresholds."""
    to = body.get("to")
    if not isinstance(to, str) or not to:
        raise invalid("a rollout needs 'to': the model (and version, MODEL:VERSION) to move traffic to")
    model, _, version = to.partition(":")
    canary = _percent(body.get("canary", 10), "canary")
    steps = _steps(body.get("steps", "linear:25%"), canary)
    bake_s = _seconds(body.get("bake", "5m"))
    factor, p99 = body.get("p99_factor"), body.get("max_p99")
    return RolloutSpec(to, str(body.get("variant") or (model if not version else f"{model}-{version}")), steps,
                       bake_s, _percent(body.get("max_error_rate", "5%"), "max_error_rate") / 100,
                       None if p99 is None else _seconds(p99), None if factor is None else float(factor),
                       int(body.get("min_requests", 10)))


def _percent(value: Any, what: str) -> float:
    text = str(value).strip().removesuffix("%")
    try:
        number = float(text)
    except ValueError:
        raise invalid(f"rollout {what} must be a percentage, got {value!r}") from None
    if not 0 <= number <= 100:
        raise invalid(f"rollout {what} must be within 0-100 %, got {value!r}")
    return number


def _steps(value: Any, canary: float) -> tuple[float, ...]:
    if isinstance(value, str) and value.startswith("linear:"):
        step = _percent(value.removeprefix("linear:"), "step")
        if step <= 0:
            raise invalid("rollout linear step must be above 0 %")
        found, at = [canary], step
        while at < 100:
            if at > canary:
                found.append(at)
            at += step
        return (*found, 100.0) if canary < 100 else (100.0,)
    if isinstance(value, list):
        found = [canary, *(_percent(v, "step") for v in value)]
        if any(b <= a for a, b in itertools.pairwise(found)):
            raise invalid("rollout steps must rise above the canary")
        return (*found, 100.0) if found[-1] < 100 else tuple(found)
    raise invalid(f"rollout steps: 'linear:N%' or a list of percentages, got {value!r}")


def _seconds(value: Any) -> float:
    text = str(value).strip()
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(text[: -len(suffix)]) * scale[suffix]
    try:
        return float(text)
    except ValueError:
        raise invalid(f"a duration: seconds or '30s', '5m', '250ms', got {value!r}") from None


def with_new_variant(endpoint: Endpoint, spec: RolloutSpec) -> Endpoint:
    """The endpoint with the rollout's variant among its live ones, at weight 0 to begin with."""
    model, _, version = spec.to.partition(":")
    for variant in endpoint.variants:
        if variant.name == spec.variant:
            if variant.shadow or variant.model != model or (version and variant.version != int(version)):
                raise invalid(f"endpoint {endpoint.name!r} has a variant {spec.variant!r} that is not {spec.to}; "
                              f"name the new variant differently ('variant')")
            return endpoint
    new = Variant(spec.variant, model, int(version) if version.isdigit() else None, 0.0)
    return Endpoint(endpoint.name, (*endpoint.variants, new), endpoint.sticky, endpoint.version)


def shares(original: Endpoint, new: str, percent: float) -> dict[str, float]:
    """Weights giving ``new`` ``percent`` of traffic, the old live variants the rest in their original ratio."""
    old = [v for v in original.live if v.name != new]
    total = sum(v.weight for v in old) or 1.0
    found = {v.name: (100 - percent) * v.weight / total for v in old}
    found[new] = percent
    return found


class LeaseLostError(Exception):
    """Another server process took the rollout over (this one was taken for dead): it drives it from now on."""


class Rollout:
    def __init__(self, endpoints: Endpoints, name: str, spec: RolloutSpec, original: dict[str, Any]) -> None:
        self._endpoints = endpoints
        self.name = name
        self.spec = spec
        self.original = original
        """The endpoint's spec before the rollout: what a rollback restores."""
        self.done = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"inferd-rollout-{self.name}")

    async def stop(self) -> None:
        """Stop the task (the server stops): the store still says running, and the next start rolls back."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        try:
            for index, percent in enumerate(self.spec.steps):
                self._set(percent, index)
                if percent >= 100:
                    break
                alarm = await self._bake(percent)
                if alarm:
                    self.roll_back(alarm)
                    return
            self._finish("succeeded", {"percent": 100.0})
        except asyncio.CancelledError:
            raise
        except LeaseLostError:
            self.done = True
            log.warning("rollout of endpoint %r: another server process took it over; this one stops driving it",
                        self.name)
        except Exception as exc:  # a failed weight change, say: traffic goes back
            log.exception("rollout of endpoint %r failed", self.name)
            self.roll_back(f"the rollout itself failed: {exc}")

    def _set(self, percent: float, index: int) -> None:
        current = self._endpoints.get(self.name)
        original = parse_endpoint(self.name, self.original)
        weights = shares(original, self.spec.variant, percent)
        changed = current.with_weights(weights)
        self._endpoints.write(self.name, changed, "rollout_step",
                              {"percent": percent, "step": index, "weights": weights})
        self._endpoints.store.update_rollout(self.name, "running", index)

    async def _bake(self, percent: float) -> str:
        """Wait the bake period, checking the alarms as it goes; the alarm's reason, or '' when none rang."""
        endpoints, spec = self._endpoints, self.spec
        old = [v.name for v in parse_endpoint(self.name, self.original).live if v.name != spec.variant]
        start = {n: endpoints.stats[self.name, n].snapshot() for n in [spec.variant, *old]}
        deadline = time.monotonic() + spec.bake_s
        tick = min(0.25, spec.bake_s / 10)
        renewed = time.monotonic()
        while True:
            if time.monotonic() - renewed >= RENEW_S:
                renewed = time.monotonic()
                if not endpoints.store.renew(self.name, endpoints.owner, LEASE_S):
                    raise LeaseLostError
            alarm = self._alarm(start, old)
            if alarm:
                return alarm
            left = deadline - time.monotonic()
            if left <= 0:
                return ""
            await asyncio.sleep(min(tick, left))

    def _alarm(self, start: dict[str, Snapshot], old: list[str]) -> str:
        spec, stats = self.spec, self._endpoints.stats
        new = window(start[spec.variant], stats[self.name, spec.variant].snapshot())
        if new.requests < spec.min_requests:
            return ""
        if new.error_rate > spec.max_error_rate:
            return (f"error rate {new.error_rate:.1%} of variant {spec.variant!r} ({new.errors} of {new.requests}) "
                    f"is above {spec.max_error_rate:.1%}")
        if new.p99_s is not None and spec.max_p99_s is not None and new.p99_s > spec.max_p99_s:
            return f"p99 latency {new.p99_s:g} s of variant {spec.variant!r} is above {spec.max_p99_s:g} s"
        if new.p99_s is not None and spec.p99_factor is not None:
            olds = [window(start[n], stats[self.name, n].snapshot()) for n in old]
            base = max((w.p99_s for w in olds if w.p99_s is not None and w.requests >= spec.min_requests),
                       default=None)
            if base is not None and new.p99_s > spec.p99_factor * base:
                return (f"p99 latency {new.p99_s:g} s of variant {spec.variant!r} is above {spec.p99_factor:g}x "
                        f"the old variants' {base:g} s")
        return ""

    def roll_back(self, reason: str) -> None:
        """Every request back to the old variants (the endpoint as it was before the rollout)."""
        try:
            self._endpoints.write(self.name, parse_endpoint(self.name, self.original), "rolled_back",
                                  {"reason": reason})
        except InferError as exc:  # the endpoint went away meanwhile
            log.error("rollback of endpoint %r failed: %s", self.name, exc.message)
        self._finish("rolled_back", {"reason": reason})

    def _finish(self, state: str, detail: dict[str, Any]) -> None:
        self.done = True
        row = self._endpoints.store.rollout(self.name)
        self._endpoints.store.update_rollout(self.name, state, row.step if row is not None else 0)
        self._endpoints.store.event(self.name, f"rollout_{state}", detail)
        log.info("rollout of endpoint %r %s: %s", self.name, state.replace("_", " "), detail)
