"""Models on demand (``model_control = "on-demand"``): a request for a model that is in the repository but not
loaded waits while it loads; loads stay under a memory budget by unloading the least recently used idle models;
models idle for ``idle_unload_s`` are unloaded (scale to zero).

Everything here runs on the event loop, where the DataPlane hands requests their model version: the decision to
unload a model (no request in flight or queued on it: :attr:`ModelVersion.in_flight`) and taking it out of
service (:meth:`ModelRepository.detach`) happen in one step, so no request can be given a version being unloaded.
Loads and closes, which block, run on threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ByteSize

from inferd.config import ConfigError, load_model_config
from inferd.errors import ErrorCode, InferError, internal, unavailable
from inferd.repository import Model, ModelRepository, State, close_loaded, take_out, why_unavailable

if TYPE_CHECKING:
    from inferd.loading import Loaded

log = logging.getLogger(__name__)

Then = Callable[[InferError | None], None]
"""What a request waiting for a load is told: None once the model is ready, else the error to answer with."""

SWEEP_S = 0.5
"""How often idle models are looked for (an idle model goes within this much after its ``idle_unload_s``)."""


@dataclass(frozen=True, slots=True)
class DemandPolicy:
    """The server's settings for models on demand."""

    load_timeout_s: float = 300.0
    """Longest a load started by a request may take (0: no limit)."""
    memory_budget: int = 0
    """Bytes the loaded models may hold together (0: no budget)."""
    idle_unload_s: float = 0.0
    """Unload a model after this long without a request, unless its model.toml says (0: never)."""


@dataclass(frozen=True, slots=True)
class ModelControl:
    """How models come and go besides the repository API: on demand (None: all load at start), and polling."""

    on_demand: DemandPolicy | None = None
    poll_s: float = 0.0
    """Follow the repository folder, looking every so many seconds (0: no polling; see inferd.polling)."""


def size_text(size: int) -> str:
    """``2.0GiB``: sizes as people and the ``memory_budget`` setting write them."""
    return ByteSize(size).human_readable()


class OnDemand:
    """Loads models for the requests that need them, one load per model however many wait, under the budget."""

    def __init__(self, repository: ModelRepository, load_pool: ThreadPoolExecutor, policy: DemandPolicy) -> None:
        self.repository = repository
        self.policy = policy
        self._load_pool = load_pool
        self._close_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inferd-unload")
        """Closes run apart from loads: a hung load must not keep an unload (and the memory) waiting."""
        self._waiting: dict[str, list[Then]] = {}
        """Models being loaded for requests, and the requests waiting for each."""
        self._hung: dict[str, str] = {}
        """Models whose load passed the load timeout and still runs: new requests get this message at once."""
        self._sizes: dict[str, int] = {}
        """The largest size each model was measured at, to make room before it loads again."""
        self._reserved: dict[int, int] = {}
        """Room made for loads under way (one key per load): counted as used, so two loads at once do not both
        take the same room."""
        self._keys = itertools.count()
        self._loading: Counter[str] = Counter()
        """Models with a load under way through :meth:`within_budget`, counted per load. Installed in the repository
        before their load's caller resumes, they must not be what another load unloads to make room meanwhile:
        their waiting requests would find them unloaded again."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    # -- requests --------------------------------------------------------------------------------
    def can_load(self, name: str) -> bool:
        """Whether a request for ``name`` should wait for a load: the model is in the repository, and not loaded
        because it never was or was unloaded (a model that failed to load keeps its error until it is loaded
        again through the repository API, or its folder changes under polling)."""
        model = self.repository.known(name)
        if model is not None and (model.reason or model.latest_ready() is not None or not model.versions
                                  or any(v.state is State.UNAVAILABLE for v in model.versions.values())):
            return False
        return name in self._waiting or self.repository.on_disk(name)

    def after_load(self, name: str, then: Then) -> None:
        """Call ``then`` once ``name`` is loaded (None) or failed to (the error); one load for every caller."""
        hung = self._hung.get(name)
        if hung is not None:
            then(unavailable(hung))
            return
        waiting = self._waiting.get(name)
        if waiting is not None:
            waiting.append(then)
            return
        self._waiting[name] = [then]
        self._spawn(self._load_for_requests(name))

    def loading(self, name: str) -> bool:
        return name in self._waiting

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_idle())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for task in list(self._tasks):
            task.cancel()
        self._close_pool.shutdown(wait=True)

    # -- loading ---------------------------------------------------------------------------------
    async def _load_for_requests(self, name: str) -> None:
        """Load ``name`` and tell every request waiting for it how it went (also when the server stops)."""
        error: InferError | None = unavailable(f"model {name!r} was not loaded: the server is stopping")
        try:
            error = await self._load_within_budget(name)
        except InferError as exc:
            error = exc
        except Exception as exc:  # a bug: the waiting requests still get an answer
            log.exception("loading model %s for its requests failed", name)
            error = internal(f"loading model {name!r} failed: {type(exc).__name__}: {exc}")
        finally:
            for then in self._waiting.pop(name, []):
                try:
                    then(error)
                except Exception:
                    log.exception("answering a request that waited for model %s failed", name)

    async def _load_within_budget(self, name: str) -> InferError | None:
        model = await self.within_budget(name, lambda: self._load_bounded(name))
        if model.latest_ready() is None:
            return unavailable(f"model {name!r} failed to load: {why_unavailable(model)}")
        return None

    async def within_budget(self, name: str, load: Callable[[], Awaitable[Model]]) -> Model:
        """Run ``load`` (a load of ``name`` on a thread) under the memory budget: every load goes through here,
        whether a request, the repository API or repository polling asked for it. Room for the model's expected
        size is made first (least recently used idle models unloaded; InferError when nothing can go, or when the
        model is larger than the whole budget), and held while it loads; once loaded, its measured size is
        remembered and others make room for it if it turned out larger. A model loaded aside (not installed in
        the repository yet: a polling reload) keeps its room until this returns; install it at once after."""
        need = self._expected_size(name)
        await self._make_room(name, need)
        key = next(self._keys)
        self._reserved[key] = need
        self._loading[name] += 1
        try:
            model = await load()
            if model.latest_ready() is not None:
                await self._fit_after_load(model, key)
        finally:
            self._reserved.pop(key, None)
            self._loading[name] -= 1
            if not self._loading[name]:
                del self._loading[name]
        return model

    async def _load_bounded(self, name: str) -> Model:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._load_pool, self.repository.load, name)
        timeout = self.policy.load_timeout_s or None
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            message = (f"model {name!r} did not load within {self.policy.load_timeout_s:g} s (load_timeout_s); "
                       "it is unloaded when its load ends")
            log.warning("%s", message)
            self._hung[name] = message
            future.add_done_callback(lambda done: self._late_load(name, done))
            raise unavailable(message) from None

    def _late_load(self, name: str, done: asyncio.Future[Model]) -> None:
        """A load that passed the load timeout ended: nobody waits for it, so what it loaded goes."""
        self._hung.pop(name, None)
        if done.cancelled() or done.exception() is not None:
            return
        if self.repository.known(name) is done.result():
            log.info("model %s: its load ended after the load timeout; unloading it", name)
            self._spawn(self._close(name))

    def _expected_size(self, name: str) -> int:
        """What a model will hold once loaded: its model.toml ``memory_size``, else its last measured size."""
        try:
            declared = load_model_config(self.repository.root / name).memory_size
        except (ConfigError, OSError):
            declared = None  # the load itself reports the problem
        return declared or self._sizes.get(name, 0)

    # -- the memory budget -----------------------------------------------------------------------
    def used(self) -> int:
        """Bytes the loaded models hold (declared or measured), and the room made for loads under way."""
        return sum(v.stats.memory_bytes for m in self.repository.models() for v in m.versions.values()
                   if v.loaded is not None) + sum(self._reserved.values())

    async def _make_room(self, name: str, need: int) -> None:
        budget = self.policy.memory_budget
        if not budget:
            return
        if need > budget:
            raise InferError(ErrorCode.FAILED_PRECONDITION,
                             f"model {name!r} needs {size_text(need)}, more than the whole memory budget "
                             f"{size_text(budget)} (memory_budget): raise the budget or make the model smaller")
        while (used := self.used()) + need > budget:
            victim = self._least_recently_used(exclude=name)
            if victim is None:
                raise self._budget_full(name, need, used)
            await self._close(victim.name, f"to make room for model {name!r} under the memory budget")

    async def _fit_after_load(self, model: Model, key: int) -> None:
        """After a load: remember its size; past the budget, unload others (or, alone past it, this one)."""
        size = sum(v.stats.memory_bytes for v in model.versions.values() if v.loaded is not None)
        self._sizes[model.name] = max(size, self._sizes.get(model.name, 0))
        aside = self.repository.known(model.name) is not model
        self._reserved[key] = size if aside else 0  # installed, it counts itself
        budget = self.policy.memory_budget
        if not budget:
            return
        if size > budget:
            taken = take_out(model) if aside else self.repository.detach(model.name)
            await self._close_taken(model.name, taken, "it is larger than the whole memory budget")
            raise InferError(ErrorCode.FAILED_PRECONDITION,
                             f"model {model.name!r} holds {size_text(size)} once loaded (measured), more than the "
                             f"whole memory budget {size_text(budget)} (memory_budget): raise the budget")
        while self.used() > budget:
            victim = self._least_recently_used(exclude=model.name)
            if victim is None:
                log.warning("memory budget %s passed (%s held) and no idle model to unload", size_text(budget),
                            size_text(self.used()))
                return
            await self._close(victim.name, f"model {model.name!r} loaded past the memory budget")

    def _budget_full(self, name: str, need: int, used: int) -> InferError:
        busy = [m.name for m in self.repository.models() if _loaded(m)]
        return InferError(
            ErrorCode.UNAVAILABLE,
            f"memory budget {size_text(self.policy.memory_budget)} (memory_budget) is full: {size_text(used)} held "
            f"by models that are pinned or have requests in flight ({', '.join(busy) or 'none'}); model {name!r} "
            f"needs {size_text(need)}",
            retry_after_s=1,
        )

    def _least_recently_used(self, exclude: str) -> Model | None:
        candidates = [m for m in self.repository.models() if m.name != exclude and self._idle(m)]
        return min(candidates, key=_last_use, default=None)

    def _idle(self, model: Model) -> bool:
        """Evictable, and not just loaded for requests that have not been handed it yet (nor loading again)."""
        return _evictable(model) and model.name not in self._waiting and model.name not in self._loading

    # -- unloading -------------------------------------------------------------------------------
    async def _close(self, name: str, why: str = "") -> None:
        await self._close_taken(name, self.repository.detach(name), why)

    async def _close_taken(self, name: str, taken: list[Loaded], why: str) -> None:
        """Close what was taken out of service (:meth:`ModelRepository.detach`, :func:`take_out`), on a thread."""
        if not taken:
            return
        if why:
            log.info("unloading model %s: %s", name, why)
        await asyncio.get_running_loop().run_in_executor(self._close_pool, close_loaded, name, taken)

    async def _sweep_idle(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            now_ms = time.time_ns() // 1_000_000
            for model in list(self.repository.models()):
                idle_s = self._idle_limit(model)
                if idle_s and self._idle(model) and now_ms - _last_used_ms(model) >= idle_s * 1000:
                    await self._close(model.name, f"no request for {idle_s:g} s (idle_unload_s)")

    def _idle_limit(self, model: Model) -> float:
        own = model.config.idle_unload_s
        return self.policy.idle_unload_s if own is None else own

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _loaded(model: Model) -> bool:
    return any(v.loaded is not None for v in model.versions.values())


def _evictable(model: Model) -> bool:
    """Loaded, not pinned, and no request given to any of its versions is still unanswered."""
    return (_loaded(model) and not model.config.pinned
            and all(v.in_flight == 0 for v in model.versions.values()))


def _last_use(model: Model) -> int:
    return max((v.last_use for v in model.versions.values() if v.loaded is not None), default=0)


def _last_used_ms(model: Model) -> int:
    return max((v.last_used_ms for v in model.versions.values() if v.loaded is not None), default=0)
