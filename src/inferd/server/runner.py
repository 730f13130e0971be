"""The composition root: settings → repository → DataPlane → REST and gRPC servers, and a clean stop.

Both servers share one event loop and one DataPlane. The HTTP port answers liveness at once; models load in
the background and readiness turns true when they are loaded (strict readiness: all of them).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from inferd import heap
from inferd.batch.server_jobs import BatchJobs
from inferd.dataplane import DataPlane
from inferd.endpoints import Endpoints, EndpointStore
from inferd.jobs.service import AsyncConfig, AsyncService
from inferd.observability.capture import CaptureWriter
from inferd.observability.request_context import RequestObserver
from inferd.on_demand import DemandPolicy, ModelControl
from inferd.repository import ModelRepository
from inferd.response_cache import ResponseCache
from inferd.security.auth import Authenticator
from inferd.security.startup import build_authenticator
from inferd.security.tls import TLSFiles
from inferd.server.http import HTTPLimits, HTTPServer
from inferd.server.http.protocol import Front
from inferd.server.rest.v2_infer import RESTRouter
from inferd.settings import ServerSettings
from inferd.shared_memory import SharedMemoryRegistry

if TYPE_CHECKING:
    from inferd.server.worker import WorkerRole
    from inferd.server.worker_link import WorkerLink

log = logging.getLogger(__name__)


EXTENSIONS = ("binary_tensor_data", "classification", "model_repository", "model_repository(unload_dependents)",
              "model_configuration", "system_shared_memory", "statistics", "generate", "sequence")
"""V2 protocol extensions the REST and gRPC servers implement, reported in server metadata."""


def build_front(dataplane: DataPlane, settings: ServerSettings, jobs: AsyncService | None = None,  # noqa: PLR0913
                batch_jobs: BatchJobs | None = None, authenticator: Authenticator | None = None,
                observer: RequestObserver | None = None, scheme: str = "http", *,
                link: WorkerLink | None = None) -> Front:
    """What the HTTP server serves: the native routes (inference, health probes) and the FastAPI app with every
    other route, built on first use. With an ``authenticator``, both check API keys: the native routes themselves,
    the app through one ASGI wrapper. With a worker ``link``, /metrics answers for every worker."""

    def full_app() -> Any:
        # FastAPI and prometheus_client: imported when first needed (after the server is ready), not at start-up
        from inferd.observability.metrics import Metrics
        from inferd.server.rest.app import build_app

        metrics = Metrics(dataplane, jobs.counts if jobs is not None else None, batch_jobs)  # the server's own registry
        if link is not None:
            link.own, metrics.whole_server = metrics.own, link.whole_server
        app: Any = build_app(dataplane, settings, jobs, batch_jobs, metrics)
        if authenticator is None:
            return app
        from inferd.security.scopes import RouteScopes
        from inferd.server.rest.auth import AuthMiddleware

        return AuthMiddleware(app, authenticator, RouteScopes(settings.health_route, settings.predict_route))

    limits = HTTPLimits(settings.max_header_bytes, settings.max_connections, settings.header_timeout_s,
                        settings.body_timeout_s, settings.keep_alive_timeout_s)
    router = RESTRouter(dataplane, settings.max_body_bytes, authenticator)
    return Front(router, full_app, limits, observer or RequestObserver(), scheme)


def build_dataplane(settings: ServerSettings) -> DataPlane:
    repository = ModelRepository(settings.repository, settings.model_defaults())
    capture = CaptureWriter(settings.capture_dir or settings.state_dir / "capture", settings.capture_buffer)
    dataplane = DataPlane(repository, extensions=EXTENSIONS, strict_readiness=settings.strict_readiness,
                          max_tensor_elements=settings.max_tensor_elements, capture=capture, settle_heap=True,
                          control=model_control(settings))
    if settings.cache_bytes:
        dataplane.cache = ResponseCache(int(settings.cache_bytes), settings.cache_ttl_s)
    dataplane.shared_memory = SharedMemoryRegistry()
    return dataplane


def open_endpoints(dataplane: DataPlane, settings: ServerSettings, follow: bool = True) -> Endpoints:
    """The endpoints (files beside the models, and the store in the state folder), resolved by the DataPlane;
    ``follow``: the store is polled for the changes other server processes on the same state folder make."""
    endpoints = Endpoints(dataplane.repository, EndpointStore(settings.state_dir / "endpoints.db"))
    endpoints.attach(dataplane)
    endpoints.open()
    if follow:
        endpoints.follow()
    return endpoints


def model_control(settings: ServerSettings) -> ModelControl:
    """How models come and go: on demand (its budget and timeouts), and repository polling."""
    on_demand = None
    if settings.model_control == "on-demand":
        on_demand = DemandPolicy(settings.load_timeout_s, int(settings.memory_budget or 0), settings.idle_unload_s)
    return ModelControl(on_demand, settings.poll_s)


async def serve(settings: ServerSettings, on_ready: Callable[[DataPlane], Awaitable[None]] | None = None,
                stop: asyncio.Event | None = None, worker: WorkerRole | None = None) -> None:
    """Run until SIGINT, SIGTERM or ``stop`` is set, then stop taking requests, finish those in flight and
    unload the models. ``on_ready`` runs once the models have loaded. Security settings that do not allow
    the server to start (no keys off loopback, broken key or TLS files) raise
    :class:`~inferd.security.startup.SecurityConfigError` before anything binds. A ``worker`` of
    ``--workers N`` shares the ports and the job store with its siblings (inferd.server.supervisor)."""
    authenticator = build_authenticator(settings)
    tls = TLSFiles.from_settings(settings.tls_certfile, settings.tls_keyfile, settings.tls_client_ca)
    dataplane = build_dataplane(settings)
    endpoints = open_endpoints(dataplane, settings)
    jobs = AsyncService(dataplane, _async_config(settings, worker))
    dataplane.add_service("async", lambda: "" if jobs.started else jobs.why_not, settings.require_async)
    batch_jobs = BatchJobs(dataplane, settings.batch_roots, jobs.store)
    observer = RequestObserver(settings.access_log)
    stop = stop or asyncio.Event()
    link = _worker_link(worker, stop)
    front = build_front(dataplane, settings, jobs, batch_jobs, authenticator, observer,
                        "https" if tls is not None else "http", link=link)
    http = HTTPServer(front, settings.host, settings.http_port, tls.ssl_context() if tls is not None else None,
                      reuse_port=worker is not None)
    _install_signal_handlers(stop)
    if dataplane.on_demand is None:  # every model loads at start: loading, not unknown, until loaded
        dataplane.repository.expect_loads(dataplane.repository.names())
    listen_first = worker is None  # a worker joins the ports once its models loaded: its siblings answer meanwhile
    if not listen_first:
        await _load(dataplane, jobs)
    await http.start()
    try:
        grpc_server = await _start_grpc(dataplane, settings, authenticator, tls, observer, worker is not None)
        if link is not None:
            await link.start()
    except BaseException:
        await http.stop(0)
        raise
    try:
        log.info("HTTP%s on %s:%d%s", "S" if tls is not None else "", settings.host, settings.http_port,
                 f", gRPC on {settings.host}:{settings.grpc_port}" if grpc_server else "")
        if listen_first:
            await _load(dataplane, jobs)
        jobs.start()  # no await between: async routes work as soon as readiness says so
        _start_batch_jobs(jobs, batch_jobs)
        await _once_started(dataplane, settings, front, on_ready)
        await stop.wait()
    finally:
        log.info("stopping")
        if link is not None:
            await link.stop()
        if grpc_server is not None:
            await grpc_server.stop(grace=5)
        await http.stop(settings.shutdown_grace_s)
        await batch_jobs.stop()  # a running batch job goes back to the queue; its journal lets the next run resume
        await jobs.stop()  # running jobs go back to the queue before the models go away
        await endpoints.stop()  # a running rollout's lease is released: whoever takes it over rolls it back
        await dataplane.stop()
        dataplane.close()
        if dataplane.capture is not None:  # after the last inference: what was captured is written
            await asyncio.get_running_loop().run_in_executor(None, dataplane.capture.close)


async def _load(dataplane: DataPlane, jobs: AsyncService) -> None:
    await jobs.open()  # the job store, while the models are not loaded yet
    if dataplane.capture is not None:
        dataplane.capture.start()
    await dataplane.start()


async def _once_started(dataplane: DataPlane, settings: ServerSettings, front: Front,
                        on_ready: Callable[[DataPlane], Awaitable[None]] | None) -> None:
    _log_readiness(dataplane, settings.require_async)
    await asyncio.get_running_loop().run_in_executor(None, front.build_app)  # the other routes, now
    heap.settle()  # the app's objects too live as long as the server
    if on_ready is not None:
        await on_ready(dataplane)


def _async_config(settings: ServerSettings, worker: WorkerRole | None) -> AsyncConfig:
    config = AsyncConfig.from_settings(settings)
    return replace(config, sqlite_worker=worker.name) if worker is not None and worker.shared_state else config


def _worker_link(worker: WorkerRole | None, stop: asyncio.Event) -> WorkerLink | None:
    if worker is None:
        return None
    from inferd.server.worker_link import WorkerLink

    return WorkerLink(worker, stop)


def _start_batch_jobs(jobs: AsyncService, batch_jobs: BatchJobs) -> None:
    """Batch jobs live in the asynchronous jobs' store: they run when it opened, and say why not otherwise."""
    if jobs.opened:
        batch_jobs.start()
    else:
        batch_jobs.why_not = jobs.why_not.replace("asynchronous inference", "batch jobs")


def _log_readiness(dataplane: DataPlane, require_async: bool) -> None:
    off = dataplane.unavailable_services()
    if dataplane.ready():
        log.info("ready%s", " (asynchronous inference is off)" if off else "")
    elif off and require_async:
        log.info("started, but not ready: asynchronous inference is off and require_async is set")
    else:
        log.info("started, but not every model loaded: not ready")


async def _start_grpc(dataplane: DataPlane, settings: ServerSettings, authenticator: Authenticator | None,
                      tls: TLSFiles | None, observer: RequestObserver, reuse_port: bool = False) -> Any:
    if not settings.grpc_port:
        return None
    from inferd.server.grpc.server import start_grpc_server

    interceptors: list[Any] = []
    if authenticator is not None:
        from inferd.server.grpc.auth import AuthInterceptor

        interceptors.append(AuthInterceptor(authenticator, observer))
    return await start_grpc_server(dataplane, settings.host, settings.grpc_port, settings.max_body_bytes,
                                   interceptors=interceptors, authenticator=authenticator,
                                   credentials=tls.grpc_credentials() if tls is not None else None,
                                   observer=observer, reuse_port=reuse_port)


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def run_until_stopped(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed (a faster event loop and socket transport), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)
