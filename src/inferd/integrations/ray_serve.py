"""inferd on Ray Serve: every replica loads the model repository into its own DataPlane, and Serve's HTTP proxy
hands requests to inferd's own REST app (the V2, V1, SageMaker and OpenAI routes), which is the replica's ASGI
ingress. There is no second REST layer: the app is :func:`inferd.server.rest.app.build_app`, as ``inferd serve``
builds it.

.. code-block:: python

    from ray import serve
    from inferd.integrations.ray_serve import inferd_app

    serve.run(inferd_app("/models", num_replicas=2, ray_actor_options={"num_cpus": 1}))

or ``serve run inferd.integrations.ray_serve:app_builder repository=/models num_replicas=2``. What is not served
on Serve (gRPC, model loading over HTTP, endpoints, shared memory; asynchronous inference and batch jobs over
HTTP without a PostgreSQL job store) is in :mod:`inferd.integrations.serve_routes` and docs/scale-out.md.

Ray is imported only when an application is built: the ``ray`` extra (``pip install 'inferd[ray]'``) brings it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from inferd.settings import ServerSettings, load_settings

if TYPE_CHECKING:
    from inferd.batch.server_jobs import BatchJobs
    from inferd.dataplane import DataPlane
    from inferd.integrations.serve_routes import ASGIApp
    from inferd.jobs.service import AsyncService

__all__ = ["DEPLOYMENT_ARGUMENTS", "MISSING_RAY", "NOT_ON_SERVE", "InferdReplica", "app_builder", "builder_arguments",
           "deployment", "inferd_app", "server_settings"]

log = logging.getLogger(__name__)

MISSING_RAY = "inferd on Ray Serve needs Ray Serve: install the ray extra, pip install 'inferd[ray]'"

NOT_ON_SERVE: dict[str, str] = {
    **dict.fromkeys(("host", "http_port", "max_connections", "max_header_bytes", "header_timeout_s",
                     "body_timeout_s", "keep_alive_timeout_s", "shutdown_grace_s", "access_log"),
                    "Serve's HTTP proxy owns the socket: set it with serve.start(http_options=...)"),
    "grpc_port": "a replica serves REST only, through Serve's HTTP proxy (run `inferd serve` for gRPC)",
    **dict.fromkeys(("tls_certfile", "tls_keyfile", "tls_client_ca"),
                    "TLS ends at Serve's proxy or the load balancer in front of it, not in a replica"),
    **dict.fromkeys(("api_keys", "api_keys_file", "allow_unauthenticated"),
                    "API keys are not checked by replicas on Ray Serve: put authentication in front of Serve's "
                    "proxy"),
}
"""Settings that have no effect in a Serve replica, and why: giving one is an error, not silently ignored."""

_SECURITY = ("api_keys", "api_keys_file", "tls_certfile", "tls_keyfile", "tls_client_ca")
"""Settings refused even when they come from ``INFERD_*`` variables: a user who set keys must not get an open
server without being told."""

DEPLOYMENT_ARGUMENTS = frozenset({"repository", "num_replicas", "num_cpus", "ray_actor_options",
                                  "max_ongoing_requests", "name"})
"""The arguments of :func:`app_builder` that shape the deployment; every other one is a server setting."""


class InferdReplica:
    """One Serve replica: a DataPlane over the repository, started before the replica takes traffic, and
    inferd's REST app over it as the replica's ASGI app. Wrapped by ``serve.ingress()`` in
    :func:`deployment`; Serve calls ``__serve_build_asgi_app__`` once the constructor has run, in the replica's
    event loop."""

    def __init__(self, settings: ServerSettings) -> None:
        from inferd.server.runner import build_dataplane

        self.replica = _replica_name()
        self.settings = settings = _own_capture_folder(settings, self.replica)
        self.dataplane: DataPlane = build_dataplane(settings)
        self.jobs: AsyncService | None = None
        self.batch_jobs: BatchJobs | None = None
        if settings.job_store:  # one shared store: every replica drains its queues (docs/async.md, batch.md)
            from inferd.batch.server_jobs import BatchJobs
            from inferd.jobs.service import AsyncConfig, AsyncService

            jobs = AsyncService(self.dataplane, AsyncConfig.from_settings(settings))
            self.dataplane.add_service("async", lambda: "" if jobs.started else jobs.why_not,
                                       settings.require_async)
            self.jobs = jobs
            self.batch_jobs = BatchJobs(self.dataplane, settings.batch_roots, jobs.store)

    async def __serve_build_asgi_app__(self) -> ASGIApp:
        from inferd.integrations.serve_routes import ServeRoutes, refusals
        from inferd.observability.metrics import Metrics
        from inferd.server.rest.app import build_app

        if self.jobs is not None:
            await self.jobs.open()
        if self.dataplane.capture is not None:
            self.dataplane.capture.start()
        await self.dataplane.start()  # models load before Serve routes a request here
        if self.jobs is not None:
            self.jobs.start()
        if self.jobs is not None and self.batch_jobs is not None:
            _start_batch_jobs(self.jobs, self.batch_jobs)
        metrics = Metrics(self.dataplane, self.jobs.counts if self.jobs is not None else None,  # this replica's
                          self.batch_jobs)
        app = build_app(self.dataplane, self.settings, self.jobs, self.batch_jobs, metrics)
        log.info("replica %s: %s", self.replica, "ready" if self.dataplane.ready() else "not every model loaded")
        return ServeRoutes(app, refusals(self.jobs is not None), self.replica)

    async def __del__(self) -> None:
        """Serve's replica shutdown: running jobs go back to the queue, then the models unload."""
        if self.batch_jobs is not None:
            await self.batch_jobs.stop()
        if self.jobs is not None:
            await self.jobs.stop()
        await self.dataplane.stop()
        self.dataplane.close()
        if self.dataplane.capture is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.dataplane.capture.close)


def _start_batch_jobs(jobs: AsyncService, batch_jobs: BatchJobs) -> None:
    """Batch jobs run from the job store once it opened (as in ``inferd serve``), and say why not otherwise."""
    if jobs.opened:
        batch_jobs.start()
    else:
        batch_jobs.why_not = jobs.why_not.replace("asynchronous inference", "batch jobs")


def _own_capture_folder(settings: ServerSettings, replica: str) -> ServerSettings:
    """Data capture into ``<capture_dir>/replica-<id>``: capture file names are unique within one process only,
    and replicas on one host share the folder. (A destination a model.toml names is used as it is.)"""
    base = settings.capture_dir or settings.state_dir / "capture"
    return settings.model_copy(update={"capture_dir": base / f"replica-{replica}"})


def _replica_name() -> str:
    """The replica's id in its deployment, as Serve's logs name it."""
    from ray import serve

    return str(serve.get_replica_context().replica_id.unique_id)


def deployment() -> Any:
    """The Serve deployment of :class:`InferdReplica` (Ray imported here, with a clear error without it)."""
    try:
        from ray import serve
    except ImportError as exc:
        raise ImportError(MISSING_RAY) from exc
    return serve.deployment(name="inferd")(serve.ingress()(InferdReplica))


def server_settings(repository: str | Path, settings: ServerSettings | Mapping[str, Any] | None = None,
                    ) -> ServerSettings:
    """The replicas' settings: ``settings`` (a mapping is read as ``inferd serve`` reads its options: defaults,
    then ``INFERD_*`` variables, then the mapping), with the repository and the state folder made absolute, since
    a replica's working directory is not the caller's. A setting that does not apply on Serve raises ValueError."""
    given = dict(settings) if isinstance(settings, Mapping) else {}
    wrong = [f"{name}: {NOT_ON_SERVE[name]}" for name in given if name in NOT_ON_SERVE]
    wrong += [f"{name}: no such setting (docs/reference.md lists them) nor deployment argument" for name in given
              if name not in ServerSettings.model_fields and name not in DEPLOYMENT_ARGUMENTS]
    if wrong:
        raise ValueError("settings that do not work on Ray Serve:\n" + "\n".join(wrong))
    resolved = settings if isinstance(settings, ServerSettings) else load_settings({**given, "repository": repository})
    wrong += [f"{name}: {NOT_ON_SERVE[name]}" for name in _SECURITY
              if name not in given and getattr(resolved, name)]
    if resolved.batch_roots and not resolved.job_store:
        wrong.append("batch_roots: batch jobs over HTTP on Ray Serve need a job store that every replica shares "
                     "(job_store=postgresql://...); or run them with `inferd batch run --engine ray`")
    if wrong:
        raise ValueError("settings that do not work on Ray Serve:\n" + "\n".join(wrong))
    return resolved.model_copy(update={"repository": Path(repository).expanduser().resolve(),
                                       "state_dir": resolved.state_dir.expanduser().resolve()})


def inferd_app(repository: str | Path, *, num_replicas: int = 1, ray_actor_options: Mapping[str, Any] | None = None,
               settings: ServerSettings | Mapping[str, Any] | None = None, max_ongoing_requests: int | None = None,
               name: str = "inferd") -> Any:
    """A bound Serve application serving the model repository at ``repository`` (a path every node can read)
    from ``num_replicas`` replicas, each an actor with ``ray_actor_options`` (``{"num_cpus": 2}``, ...).
    ``max_ongoing_requests``: requests Serve lets into one replica at once (Serve's default is small; dynamic
    batching needs at least ``max_batch_size``). Pass the result to ``serve.run``."""
    resolved = server_settings(repository, settings)
    options: dict[str, Any] = {"name": name, "num_replicas": num_replicas}
    if ray_actor_options is not None:
        options["ray_actor_options"] = dict(ray_actor_options)
    if max_ongoing_requests is not None:
        options["max_ongoing_requests"] = max_ongoing_requests
    return deployment().options(**options).bind(resolved)


def app_builder(args: dict[str, Any]) -> Any:
    """``serve run inferd.integrations.ray_serve:app_builder repository=/models [num_replicas=2] [num_cpus=0.5]
    [ray_actor_options='{"num_cpus": 1}'] [max_ongoing_requests=64] [SETTING=VALUE ...]``: every argument not
    about the deployment is a server setting by name (``max_batch_size=8``, ``job_store=postgresql://...``)."""
    arguments = builder_arguments(args)
    return inferd_app(arguments.pop("repository"), **arguments)


def builder_arguments(args: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`app_builder`'s arguments (strings from the command line, or values from a Serve config file) as
    the keyword arguments of :func:`inferd_app`. Raises ValueError naming what is missing or wrong."""
    if not args.get("repository"):
        raise ValueError("app_builder needs repository=PATH, the model repository every replica loads")
    options: dict[str, Any] = {"repository": str(args["repository"])}
    actor = _mapping(args.get("ray_actor_options", {}), "ray_actor_options")
    if "num_cpus" in args:
        actor["num_cpus"] = _number(args["num_cpus"], "num_cpus", float)
    if actor:
        options["ray_actor_options"] = actor
    for key in ("num_replicas", "max_ongoing_requests"):
        if key in args:
            options[key] = _number(args[key], key, int)
    if "name" in args:
        options["name"] = str(args["name"])
    options["settings"] = {key: _json_or_text(value) for key, value in args.items() if key not in DEPLOYMENT_ARGUMENTS}
    return options


def _json_or_text(value: Any) -> Any:
    """A command-line value: a JSON list or object (``batch_roots='["/data"]'``) decoded, as ``INFERD_*``
    variables are; anything else as given."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value  # the settings say what is wrong with it
    return value


def _mapping(value: Any, key: str) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise ValueError(f"{key} must be a JSON object, got {value!r}") from None
    if not isinstance(value, Mapping):
        raise ValueError(f"{key} must be a JSON object, got {value!r}")
    return dict(value)


def _number(value: Any, key: str, kind: type[int] | type[float]) -> int | float:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be {'an integer' if kind is int else 'a number'}, got {value!r}") from None
    if number < 0 or (kind is int and number < 1):
        raise ValueError(f"{key} must be {'at least 1' if kind is int else 'at least 0'}, got {value!r}")
    return number
