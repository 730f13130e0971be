"""The model repository: model folders on disk, the versions served of each, and their load state.

Loading one model never stops the others: a model that fails (bad config, corrupt artifact, missing extra)
is recorded as UNAVAILABLE with the reason, which the index and model-ready calls report.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from inferd.artifacts import VersionSource, artifact_sha256, find_versions, resolve_artifact
from inferd.config import CacheConfig, CaptureConfig, ConfigError, ModelConfig, load_model_config
from inferd.errors import ErrorCode, InferError, not_found, unavailable
from inferd.load_parameters import LoadParameters, apply_config, failed
from inferd.loading import Loaded, ServerDefaults, load
from inferd.response_cache import cache_scope
from inferd.runtimes.base import Runtime
from inferd.scheduling.scheduler import Scheduler
from inferd.signature import Signature
from inferd.stats import ModelStats

log = logging.getLogger(__name__)

USES = itertools.count(1)
"""Orders uses of model versions (a load, each request given one): the least recently used has the lowest."""


class State(StrEnum):
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    """Failed to load; ``reason`` says why."""
    UNLOADED = "UNLOADED"


@dataclass(slots=True)
class ModelVersion:
    """One served version of a model: where it came from, its state and, once ready, its runtime."""

    name: str
    version: int
    state: State
    source: VersionSource | None = None
    loaded: Loaded | None = None
    reason: str = ""
    sha256: str = ""
    """Digest of the artifact as loaded (of a manifest of its files for a folder); empty when not loaded."""
    capture: CaptureConfig | None = None
    """Data capture for this version (model.toml ``[capture]``), None when off."""
    cache: CacheConfig | None = None
    """The response cache for this version (model.toml ``[cache]``), None when off."""
    cache_scope: bytes = b""
    """What its cached results are keyed under besides the inputs (see inferd.response_cache)."""
    in_flight: int = 0
    """Requests given to this version and not answered yet (queued or running): a version with any is never
    unloaded to make room or when idle."""
    last_use: int = 0
    """When it was last given a request, or loaded (a :data:`USES` number): orders the least recently used."""
    loaded_at_ms: int = 0
    """Wall-clock time (ms) it became ready: a version no request has used yet is as recent as that."""
    stats: ModelStats = field(init=False)
    version_text: str = field(init=False)
    """The version number as the protocols write it (made once: every answer names it)."""

    def __post_init__(self) -> None:
        self.version_text = str(self.version)
        self.stats = ModelStats(self.name, self.version_text)

    @property
    def signature(self) -> Signature:
        return self.require_loaded().signature

    @property
    def scheduler(self) -> Scheduler:
        return self.require_loaded().scheduler

    @property
    def runtime(self) -> Runtime | None:
        """The in-process runtime (None for process instances, or when not loaded)."""
        return self.loaded.runtime if self.loaded else None

    @property
    def max_batch_size(self) -> int:
        """Largest batch one request (or merged batch) may carry; 0 when the model has no batch dimension."""
        return self.require_loaded().scheduler.policy.max_batch_size

    def require_loaded(self) -> Loaded:
        """What is loaded; UNAVAILABLE when nothing is."""
        if self.loaded is None:
            raise unavailable(f"model {self.name!r} version {self.version} is not loaded")
        return self.loaded

    @property
    def serving(self) -> bool:
        """Loaded and able to run now (false while, say, a crashed worker process is being replaced)."""
        return self.state is State.READY and self.loaded is not None and self.loaded.executor.ready

    @property
    def index_state(self) -> tuple[str, str]:
        """State and reason for the repository index: UNAVAILABLE, with the executor's reason, while a loaded
        version refuses calls (a call past its execution timeout holds an in-process instance)."""
        refusing = getattr(self.loaded.executor, "not_ready_reason", "") if self.loaded is not None else ""
        if self.state is State.READY and refusing:
            return State.UNAVAILABLE.value, refusing
        return self.state.value, self.reason

    @property
    def runtime_name(self) -> str:
        return self.source.runtime.name if self.source else ""

    @property
    def last_used_ms(self) -> int:
        """When a request last finished on it, or when it loaded if none has (wall clock, ms)."""
        return max(self.stats.last_inference_ms, self.loaded_at_ms)


@dataclass(slots=True)
class Model:
    """A model folder and the versions its policy selects."""

    name: str
    folder: Path
    config: ModelConfig = field(default_factory=ModelConfig)
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    reason: str = ""
    """Why the model as a whole could not load (bad model.toml, no versions), else empty."""
    reload_error: str = ""
    """Why its folder's latest change could not be served (repository polling): it serves as it was."""
    staged: Path | None = None
    """The temporary folder this model was loaded from (a load with ``file:`` parameters), removed with it."""

    def latest_ready(self) -> ModelVersion | None:
        best: ModelVersion | None = None
        for version in self.versions.values():  # usually one: no list, no sort on the request path
            if version.state is State.READY and (best is None or version.version > best.version):
                best = version
        return best


class ModelRepository:
    """Model folders under ``root``. Thread-safe: loads and unloads of one model are serialized (two models load
    at once: a slow or hung load holds up no other model), lookups lock-free."""

    def __init__(self, root: Path, defaults: ServerDefaults | None = None) -> None:
        if not root.is_dir():
            raise FileNotFoundError(f"model repository {root} does not exist or is not a folder")
        self.root = root
        self.defaults = defaults or ServerDefaults()
        self._models: dict[str, Model] = {}
        self._loading: set[str] = set()
        """Models whose first load has not finished (or not begun: queued behind others at start-up)."""
        self._lock = threading.Lock()
        """Guards ``_model_locks``."""
        self._model_locks: dict[str, threading.Lock] = {}

    def names(self) -> list[str]:
        """Models on disk now: every visible subfolder of the root."""
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
        )

    def on_disk(self, name: str) -> bool:
        """Whether ``name`` is a model folder of the repository now (what :meth:`names` would list)."""
        if not name or name.startswith((".", "_")) or "/" in name or "\\" in name or name == "..":
            return False
        return (self.root / name).is_dir()

    def models(self) -> Iterator[Model]:
        """Every model known so far (loaded, failed or unloaded), sorted by name."""
        for name in sorted(self._models):
            yield self._models[name]

    def load_all(self) -> list[Model]:
        names = self.names()
        self.expect_loads(names)  # each is loading until its turn is over
        return [self.load(name) for name in names]

    def expect_loads(self, names: list[str]) -> None:
        """Count these models as loading from now on, until their first load is over (a server calls it before
        it takes requests, so that a model that is about to load is never "unknown")."""
        self._loading.update(n for n in names if n not in self._models)

    def load(self, name: str, parameters: LoadParameters | None = None) -> Model:
        """Load (or reload) a model's selected versions. A failure of the model is recorded, not raised; bad
        ``parameters`` (Triton's load parameters: a configuration, files) raise INVALID_ARGUMENT before anything
        loaded is touched."""
        staged = _stage(name, parameters.files) if parameters is not None and parameters.files else None
        folder = self.root / name if staged is None else staged / name
        try:
            if staged is None and name not in self.names():
                self._loading.discard(name)
                raise not_found(f"failed to load '{name}': no model {name!r} in repository {self.root}")
            config = None if parameters is None else _configured(name, folder, parameters)
        except BaseException:
            self._loading.discard(name)
            _remove(staged)
            raise
        if name not in self._models:
            self._loading.add(name)
        try:
            with self._model_lock(name):
                model = self._read(name, folder, config)
                model.staged = staged
                previous = self._models.get(name)
                self._models[name] = model
        finally:
            self._loading.discard(name)
        if previous is not None:
            _close(previous)
        return model

    def close(self) -> None:
        """Close every model and remove the folders staged for them (at shutdown)."""
        with self._lock:
            for model in self._models.values():
                _close(model)

    def loading(self, name: str) -> bool:
        """Whether the model's first load is under way (or queued): it is not served yet, but will be."""
        return name in self._loading and name not in self._models

    def _model_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._model_locks.setdefault(name, threading.Lock())

    def unload(self, name: str) -> Model:
        with self._model_lock(name):
            model = self._models.get(name)
            if model is None or not any(v.state is State.READY for v in model.versions.values()):
                raise not_found(f"model {name!r} is not loaded")
            _close(model)
        return model

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        """The ready version asked for (the newest ready one when ``version`` is None)."""
        model = self._models.get(name)
        if model is None:
            if self.loading(name):
                raise _still_loading(name)
            known = ", ".join(self._models) or "none"
            raise not_found(f"{unknown_model(name)}; served models: {known}")
        if version is None:
            found = model.latest_ready()
            if found is None:
                if not self.on_disk(name):  # unloaded, and its folder deleted since: nothing can load it again
                    raise not_found(f"model {name!r} is no longer in the repository: its folder {model.folder} "
                                    f"was removed after it was unloaded")
                raise unavailable(f"model {name!r} is not ready: {why_unavailable(model)}")
            return found
        chosen = model.versions.get(version)
        if chosen is None:
            served = ", ".join(str(v) for v in sorted(model.versions)) or "none"
            raise not_found(f"model {name!r} has no version {version}; versions served: {served}")
        if chosen.state is not State.READY:
            reason = f": {chosen.reason}" if chosen.reason else ""
            raise unavailable(f"model {name!r} version {version} is {chosen.state.value.lower()}{reason}")
        return chosen

    def known(self, name: str) -> Model | None:
        """The model as last loaded (or unloaded, or failed), None when it never was."""
        return self._models.get(name)

    def detach(self, name: str) -> list[Loaded]:
        """Take a model's loaded versions out of service at once (state UNLOADED: the next request finds it
        unloaded) and give them to the caller, who closes them (:func:`close_loaded`, which may block). Called on
        the event loop, where requests are given their version, so no request is handed one in between."""
        model = self._models.get(name)
        return take_out(model) if model is not None else []

    def read_aside(self, name: str) -> Model:
        """Load a model's selected versions without serving them (:meth:`install` does): a reload that must
        not fail the requests of the version serving now. A failure is recorded in the model, not raised."""
        with self._model_lock(name):
            return self._read(name, self.root / name)

    def install(self, model: Model) -> Model | None:
        """Serve ``model`` (from :meth:`read_aside`) from now on; the one it replaces, for the caller to drain."""
        previous = self._models.get(model.name)
        self._models[model.name] = model
        return previous

    def forget(self, name: str) -> Model | None:
        """Stop knowing a model (its folder is gone): its requests get NOT_FOUND; the caller drains the old one."""
        return self._models.pop(name, None)

    def find(self, name: str) -> Model:
        model = self._models.get(name)
        if model is None:
            if self.loading(name):
                raise _still_loading(name)
            raise InferError(ErrorCode.NOT_FOUND, unknown_model(name))
        return model

    def _read(self, name: str, folder: Path, config: ModelConfig | None = None) -> Model:
        try:
            config = load_model_config(folder) if config is None else config
            on_disk = find_versions(folder)
        except (ConfigError, ValueError, OSError) as exc:
            log.warning("model %s failed to load: %s", name, exc)
            return Model(name, folder, reason=str(exc))
        model = Model(name, folder, config)
        capture = config.capture if config.capture.enabled and config.capture.sample_percent > 0 else None
        for number in config.versions.select(sorted(on_disk)):
            before, started = resident_bytes(), time.perf_counter_ns()
            version = _load_version(name, number, on_disk[number], folder, config, self.defaults)
            version.stats.load_ns = time.perf_counter_ns() - started
            version.stats.memory_bytes = config.memory_size or _held(version, before)
            version.loaded_at_ms = time.time_ns() // 1_000_000
            version.last_use = next(USES)
            version.capture = capture
            if config.cache.enabled and version.state is State.READY:
                version.cache = config.cache
                version.cache_scope = cache_scope(name, number, version.sha256, config.model_dump_json())
            model.versions[number] = version
        if not model.versions:
            model.reason = f"version policy {config.versions.policy!r} selects none of {sorted(on_disk)}"
        return model


def _load_version(name: str, number: int, folder: Path, model_folder: Path, config: ModelConfig,
                  defaults: ServerDefaults) -> ModelVersion:
    try:
        source = resolve_artifact(number, folder, config)
    except ValueError as exc:
        log.warning("model %s version %d failed to load: %s", name, number, exc)
        return ModelVersion(name, number, State.UNAVAILABLE, reason=str(exc))
    try:
        loaded = load(name, source, model_folder, config, defaults)
    except Exception as exc:  # any framework error while loading is reported, never fatal for the rest
        if str(source.artifact) in str(exc):  # our own messages already name the file
            reason = f"{source.runtime.name} runtime: {exc}"
        else:
            reason = f"{source.runtime.name} runtime could not load {source.artifact}: {type(exc).__name__}: {exc}"
        log.warning("model %s version %d failed to load: %s", name, number, reason)
        return ModelVersion(name, number, State.UNAVAILABLE, source, reason=reason)
    digest = artifact_sha256(source.artifact)
    log.info("model %s version %d ready (%s, sha256 %s)", name, number, source.runtime.name, digest)
    return ModelVersion(name, number, State.READY, source, loaded, sha256=digest)


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes(pid: int | str = "self") -> int:
    """A process's resident memory, from /proc (0 where there is none: not Linux, or the process is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _held(version: ModelVersion, before: int) -> int:
    """What a version's load took: this process's growth, plus its worker processes' memory (process instances)."""
    if version.loaded is None:
        return 0
    grown = max(0, resident_bytes() - before)
    workers: list[int] = getattr(version.loaded.executor, "pids", [])
    return grown + sum(resident_bytes(pid) for pid in workers)


def take_out(model: Model) -> list[Loaded]:
    """Take a model's loaded versions out of service (state UNLOADED), their schedulers closed (on the event loop,
    whose timers they hold); their executors are the caller's to close (:func:`close_loaded`)."""
    taken: list[Loaded] = []
    for version in model.versions.values():
        if version.loaded is not None:
            version.loaded.scheduler.close()
            taken.append(version.loaded)
            version.loaded = None
        if version.state is State.READY:
            version.state = State.UNLOADED
    return taken


def close_loaded(name: str, loaded: list[Loaded]) -> None:
    """Stop the executors of what :meth:`ModelRepository.detach` took out of service."""
    for entry in loaded:
        try:
            entry.executor.close()
            if entry.generator is not None:  # a generative model's engine and its running sequences
                entry.generator.close()
        except Exception:  # closing must not stop the unload of the others
            log.exception("closing model %s failed", name)


def _stage(name: str, files: dict[str, bytes]) -> Path:
    """A temporary folder holding ``<name>/<path>`` for each file (paths checked by the load parameters)."""
    if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise failed(name, "a model loaded from files needs a name that is a plain folder name")
    staged = Path(tempfile.mkdtemp(prefix="inferd-load-"))
    try:
        for path, content in files.items():
            target = staged / name / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
    except OSError as exc:  # a path that is both a file and a folder, a name too long, a full disk
        _remove(staged)
        raise failed(name, f"the files could not be written to a model folder: {exc.strerror or exc}") from None
    except BaseException:
        _remove(staged)
        raise
    return staged


def _configured(name: str, folder: Path, parameters: LoadParameters) -> ModelConfig | None:
    """The model's configuration for a load with parameters: its model.toml (in the staged folder, for a load
    from files) with the ``config`` parameter in its place."""
    if parameters.config is None:
        return None
    try:
        base = load_model_config(folder)
    except ConfigError as exc:
        raise failed(name, str(exc)) from None
    return apply_config(name, base, parameters.config)


def _remove(staged: Path | None) -> None:
    if staged is not None:
        shutil.rmtree(staged, ignore_errors=True)


def _close(model: Model) -> None:
    for version in model.versions.values():
        if version.loaded is not None:
            try:
                version.loaded.close()
            except Exception:  # closing must not stop the unload of the others
                log.exception("closing model %s version %d failed", model.name, version.version)
            version.loaded = None
        if version.state is State.READY:
            version.state = State.UNLOADED
    _remove(model.staged)  # after its executors stopped: worker processes may read from it until then
    model.staged = None


def unknown_model(name: str) -> str:
    """Triton's words for a model it does not serve, which its clients (simple_http_infer_client.py) match on."""
    return f"Request for unknown model: '{name}' is not found"


def _still_loading(name: str) -> InferError:
    return unavailable(f"model {name!r} is loading; it is not ready yet (GET /v2/models/{name}/ready says when)")


def why_unavailable(model: Model) -> str:
    if model.reason:
        return model.reason
    reasons = [f"version {v.version}: {v.reason or v.state.value.lower()}" for v in model.versions.values()]
    return "; ".join(reasons) or "no versions"
