"""The endpoints of one server: declared in files, changed through the admin API, kept in the state folder,
and resolved once per request on the one inference path (:meth:`Endpoints.route`, called by the DataPlane).

Files: ``endpoints.toml`` in the repository folder (a table per endpoint) and ``<name>.endpoint.toml`` files (one
endpoint each); neither is a model folder, so the repository never lists them. At start the store wins over
the files for an endpoint it knows (admin changes survive a restart); a file endpoint the store does not know
is written to it. Every change builds a new :class:`~inferd.endpoints.router.RoutingTable` and swaps it in.
"""

from __future__ import annotations

import logging
import random
import tomllib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from inferd.calls import Call, Routing
from inferd.endpoints.lease import LEASE_S, lapsed, new_owner
from inferd.endpoints.model import Endpoint, check_against, parse_endpoint
from inferd.endpoints.router import RoutedCall, RoutingTable, Tap, TappedCall
from inferd.endpoints.shadow import Copy, ShadowRunner
from inferd.endpoints.stats import VariantStats
from inferd.endpoints.store import EndpointStore, Event
from inferd.errors import ErrorCode, InferError, not_found

if TYPE_CHECKING:
    from inferd.dataplane import DataPlane
    from inferd.endpoints.follow import Follower
    from inferd.endpoints.model import Variant
    from inferd.endpoints.rollout import Rollout
    from inferd.repository import ModelRepository

log = logging.getLogger(__name__)

FILE = "endpoints.toml"
SUFFIX = ".endpoint.toml"


class Endpoints:
    def __init__(self, repository: ModelRepository, store: EndpointStore) -> None:
        self.repository = repository
        self.store = store
        self.table = RoutingTable({})
        self.stats: dict[tuple[str, str], VariantStats] = {}
        """By (endpoint, variant): kept across changes, so a weight change resets no counter."""
        self.shadow: ShadowRunner | None = None
        self.rollouts: dict[str, Rollout] = {}
        self.owner = new_owner()
        """This process's name in the store, as the driver of the rollouts it started or took over."""
        self._dataplane: DataPlane | None = None
        self._follower: Follower | None = None

    # -- set-up ----------------------------------------------------------------------------------------
    def attach(self, dataplane: DataPlane) -> None:
        self._dataplane = dataplane
        self.shadow = ShadowRunner(dataplane)
        dataplane.endpoints = self

    def open(self) -> None:
        """Read the files and the store, and build the first table. An endpoint that fails its checks is left
        out, with the reason logged: the server still starts."""
        stored = self.store.endpoints()
        for name, declared in self._declared().items():
            if name not in stored:
                try:
                    self._check(parse_endpoint(name, declared))
                except InferError as exc:
                    log.error("endpoint %r in the repository's files is refused: %s", name, exc.message)
                    continue
                try:
                    self.store.put(name, dict(declared), 0, "declared", {"source": "file"})
                except InferError as exc:
                    if exc.code is not ErrorCode.ABORTED:
                        raise
                    # another server process on the same state folder (--workers N) declared it first
        self._swap(self._stored({}))
        self.recover()

    def follow(self) -> None:
        """Follow the store from now on (on the event loop): changes other server processes make reach this
        one's table within about a second, and their rollouts are taken over if they die."""
        from inferd.endpoints.follow import Follower

        self._follower = Follower(self)
        self._follower.start()

    def refresh(self) -> None:
        """Read the store again and swap the table in if an endpoint changed (another process wrote it)."""
        current = {name: c.endpoint for name, c in self.table.endpoints.items()}
        stored = self.store.endpoints()
        known = {name: version for name, (spec, version) in stored.items() if spec is not None}
        if known != {name: e.version for name, e in current.items()}:
            self._swap(self._stored(current, stored))

    def _stored(self, current: dict[str, Endpoint],
                stored: dict[str, tuple[dict[str, Any] | None, int]] | None = None) -> dict[str, Endpoint]:
        """The store's endpoints, parsed and checked; one that fails its checks is left out, with the reason
        logged (a ``current`` one of the same version is kept as it is, already checked)."""
        endpoints: dict[str, Endpoint] = {}
        for name, (spec, version) in (self.store.endpoints() if stored is None else stored).items():
            if spec is None:
                continue
            if name in current and current[name].version == version:
                endpoints[name] = current[name]
                continue
            try:
                endpoint = parse_endpoint(name, spec, version)
                self._check(endpoint)
            except InferError as exc:
                log.error("endpoint %r is refused: %s", name, exc.message)
                continue
            endpoints[name] = endpoint
        return endpoints

    def _declared(self) -> dict[str, dict[str, Any]]:
        root = self.repository.root
        found: dict[str, dict[str, Any]] = {}
        paths = [root / FILE] if (root / FILE).is_file() else []
        paths += sorted(root.glob("*" + SUFFIX))
        for path in paths:
            try:
                raw = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
                log.error("cannot read endpoints from %s: %s", path, exc)
                continue
            if path.name == FILE:
                found.update({k: v for k, v in raw.items() if isinstance(v, dict)})
            else:
                found[path.name.removesuffix(SUFFIX)] = raw
        return found

    def _check(self, endpoint: Endpoint) -> None:
        repository = self.repository

        def has_model(name: str) -> bool:
            return repository.known(name) is not None or repository.on_disk(name)

        def has_version(name: str, version: int) -> bool:
            known = repository.known(name)
            return (known is not None and version in known.versions) or (repository.root / name / str(version)).is_dir()

        check_against(endpoint, has_model, has_version)

    def _swap(self, endpoints: dict[str, Endpoint]) -> None:
        for endpoint in endpoints.values():
            for variant in endpoint.variants:
                self.stats.setdefault((endpoint.name, variant.name), VariantStats())
        self.table = RoutingTable.of(endpoints, self.stats)  # one assignment: a request sees the old table or the new

    # -- reading ---------------------------------------------------------------------------------------
    def get(self, name: str) -> Endpoint:
        compiled = self.table.endpoints.get(name)
        if compiled is None:
            known = ", ".join(sorted(self.table.endpoints)) or "none"
            raise not_found(f"unknown endpoint {name!r}; endpoints: {known}")
        return compiled.endpoint

    def describe(self, name: str) -> dict[str, Any]:
        """An endpoint as the admin API shows it: its spec, traffic shares, per-variant statistics, rollout."""
        compiled = self.table.endpoints.get(name)
        endpoint = self.get(name)
        assert compiled is not None
        variants = []
        for variant in endpoint.variants:
            stats = self.stats[name, variant.name]
            entry = {**variant.to_dict(), "requests": stats.requests, "errors": stats.errors}
            if variant.shadow:
                entry["shadow_stats"] = stats.shadow_summary()
            else:
                entry["traffic_percent"] = compiled.weights()[variant.name]
            variants.append(entry)
        row = self.store.rollout(name)
        return {**endpoint.to_dict(), "variants": variants,
                "rollout": None if row is None else {"state": row.state, "step": row.step, **row.spec}}

    def names(self) -> list[str]:
        return sorted(self.table.endpoints)

    def history(self, name: str) -> list[Event]:
        if name not in self.table.endpoints and not self.store.events(name, 1):
            self.get(name)  # raises NOT_FOUND
        return self.store.events(name)

    # -- changes ---------------------------------------------------------------------------------------
    def put(self, name: str, spec: dict[str, Any], expected: int | None, event: str = "changed",
            detail: dict[str, Any] | None = None) -> Endpoint:
        """Create or replace an endpoint if its version is still ``expected`` (None: whatever it is); ABORTED
        for the loser of two changes made at once; INVALID_ARGUMENT / NOT_FOUND for a spec that cannot serve."""
        self._refuse_during_rollout(name)
        return self._write(parse_endpoint(name, spec), expected, event, detail)

    def write(self, name: str, endpoint: Endpoint, event: str, detail: dict[str, Any]) -> Endpoint:
        """A change the server makes itself (a rollout's step or rollback), whatever the version is now."""
        return self._write(endpoint, None, event, detail)

    def _write(self, endpoint: Endpoint, expected: int | None, event: str,
               detail: dict[str, Any] | None) -> Endpoint:
        self._check(endpoint)
        name = endpoint.name
        spec = _spec(endpoint)
        version = self.store.put(name, spec, expected, event, {**(detail or {}), "spec": spec})
        endpoints = {n: c.endpoint for n, c in self.table.endpoints.items()}
        endpoints[name] = parse_endpoint(name, spec, version)
        self._swap(endpoints)
        return endpoints[name]

    def running(self, name: str) -> bool:
        """Whether a rollout runs on the endpoint, driven by this process or another one sharing the store."""
        rollout = self.rollouts.get(name)
        if rollout is not None and not rollout.done:
            return True
        row = self.store.rollout(name)
        return row is not None and row.state == "running"

    def _refuse_during_rollout(self, name: str) -> None:
        if self.running(name):
            raise InferError(ErrorCode.ABORTED, f"endpoint {name!r} has a rollout running: its weights are the "
                                                f"rollout's until it finishes")

    def start_rollout(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Start a rollout (ABORTED when one is running on the endpoint): the new variant joins at weight 0 and
        the task moves traffic to it."""
        from inferd.endpoints.rollout import Rollout, parse_rollout, with_new_variant

        current = self.get(name)
        spec = parse_rollout(body)
        self._refuse_during_rollout(name)
        changed = with_new_variant(current, spec)
        self._check(changed)
        original = _spec(current)
        self.store.start_rollout(name, {**spec.to_dict(), "original": original}, self.owner, LEASE_S)
        self.write(name, changed, "rollout_started", {"rollout": spec.to_dict()})
        rollout = self.rollouts[name] = Rollout(self, name, spec, original)
        rollout.start()
        return spec.to_dict()

    def recover(self) -> None:
        """Take over, and roll back, every running rollout whose driving process is gone (this server restarted
        during it, or another process sharing the store died or stopped; see :mod:`inferd.endpoints.lease`)."""
        for row in self.store.running_rollouts(self.owner):
            if row.endpoint not in self.table.endpoints or not lapsed(row, self.owner):
                continue
            if not self.store.take_over(row.endpoint, self.owner, LEASE_S, row):
                continue  # another process took it over first
            reason = (f"the server process driving the rollout stopped or died at step {row.step} (a restart "
                      f"during the rollout, or a crash): the bake window's statistics were lost with it, so "
                      f"traffic goes back to the old variants")
            try:
                self.write(row.endpoint, parse_endpoint(row.endpoint, row.spec["original"]), "rolled_back",
                           {"reason": reason})
            except InferError as exc:
                log.error("cannot roll back endpoint %r after a restart: %s", row.endpoint, exc.message)
                continue
            self.store.update_rollout(row.endpoint, "rolled_back", row.step)
            self.store.event(row.endpoint, "rollout_rolled_back", {"reason": reason})
            log.warning("endpoint %r: %s", row.endpoint, reason)

    def delete(self, name: str, expected: int | None) -> None:
        self.get(name)
        self._refuse_during_rollout(name)
        self.store.put(name, None, expected, "deleted", {})
        self._swap({n: c.endpoint for n, c in self.table.endpoints.items() if n != name})

    # -- the inference path ----------------------------------------------------------------------------
    def route(self, call: Call[Any], answer: Callable[[Any], None], started: int) -> RoutedCall:
        """The call to the variant this request goes to; it is also the call's answer, wrapped to count it per
        variant and, when the request is sampled for a shadow, to queue the copy once the caller has its answer.
        Raises NOT_FOUND for a forced variant that is not one of the endpoint's."""
        compiled = self.table.endpoints[call.model_name]
        routing = call.route()
        target = compiled.choose(routing.variant, routing.key)
        routing.endpoint, routing.answered, routing.shown = compiled.endpoint.name, target.variant.name, target.shown
        shadows = compiled.shadows
        if not shadows or self.shadow is None:
            return RoutedCall(call, target, routing, started, answer)
        sampled = [s for s in shadows if s.sample >= 100 or random.random() * 100 < s.sample]
        if not sampled:
            return RoutedCall(call, target, routing, started, answer)
        tapped = TappedCall(call, target, routing, started, answer)
        tap = tapped.tap
        tapped.after = lambda outcome: self._copy(compiled.endpoint.name, sampled, tap, outcome)
        return tapped

    def _copy(self, endpoint: str, shadows: list[Variant], tap: Tap, outcome: Any) -> None:
        if isinstance(outcome, BaseException) or tap.arrays is None or tap.outputs is None or self.shadow is None:
            return
        for variant in shadows:
            self.shadow.offer(Copy(variant, self.stats[endpoint, variant.name], tap.arrays, tap.rows, tap.outputs))

    def choose(self, name: str, routing: Routing | None) -> tuple[Variant, VariantStats]:
        """The variant a request to endpoint ``name`` goes to (for the routes that do not run a tensor call through
        :meth:`route`: generation, embeddings), with what ``routing`` forces or keys, recorded in it; and the
        variant's statistics, for the caller to count the request in. NOT_FOUND for a forced variant that is not
        one of the endpoint's."""
        compiled = self.table.endpoints[name]
        target = compiled.choose(None, None) if routing is None else compiled.choose(routing.variant, routing.key)
        if routing is not None:
            routing.endpoint, routing.answered, routing.shown = name, target.variant.name, target.shown
        return target.variant, target.stats

    def pick_model(self, name: str) -> tuple[str, str | None]:
        """The model and version a request for endpoint ``name`` would go to now (for the routes that need a
        signature before their inference: the variants of an endpoint are meant to share one)."""
        variant = self.table.endpoints[name].pick(None, None)
        return variant.model, None if variant.version is None else str(variant.version)

    async def stop(self) -> None:
        """Stop following and driving: this process's running rollouts stay running in the store, their leases
        released, so that another process (or the next start) takes them over, and rolls them back, at once."""
        if self._follower is not None:
            await self._follower.stop()
        for rollout in list(self.rollouts.values()):
            await rollout.stop()
        self.store.release(self.owner)
        if self.shadow is not None:
            await self.shadow.stop()
        self.store.close()


def _spec(endpoint: Endpoint) -> dict[str, Any]:
    """What the store keeps of an endpoint: its mapping without its name and change counter."""
    spec = endpoint.to_dict()
    del spec["name"], spec["version"]
    return spec
