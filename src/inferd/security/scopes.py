"""Which scope each call needs: the one table for HTTP routes and the one for gRPC methods.

``None`` means open: the health probes answer without a key, so that load balancers and orchestrators need
none. ``admin`` holds every scope; ``infer`` and ``read`` are independent of each other.
"""

from __future__ import annotations

import re
from enum import StrEnum


class Scope(StrEnum):
    INFER = "infer"
    """Inference, and asynchronous jobs: submitting, reading and cancelling the key's own."""
    READ = "read"
    """Metadata, configuration, statistics, the repository index, metrics and the API docs."""
    ADMIN = "admin"
    """Repository load and unload, batch jobs, every key's asynchronous jobs; implies the other two."""


_M = r"/v2/models/[^/]+(?:/versions/[^/]+)?"

HTTP_ROUTES: tuple[tuple[str | None, re.Pattern[str], Scope | None], ...] = tuple(
    (method, re.compile(f"^{pattern}$"), scope) for method, pattern, scope in (
        ("GET", r"/v2/health/(?:live|ready)", None),
        ("GET", r"/ping", None),
        ("GET", _M + r"/ready", None),
        ("GET", r"/v1/models/[^/:]+", None),  # KServe V1 model readiness
        ("POST", _M + r"/infer", Scope.INFER),
        ("POST", _M + r"/infer-async", Scope.INFER),
        ("POST", _M + r"/generate(?:_stream)?", Scope.INFER),
        ("POST", r"/v1/models/[^/]+:predict", Scope.INFER),
        ("POST", r"/invocations", Scope.INFER),
        ("POST", r"/openai/v1/(?:completions|chat/completions|embeddings)", Scope.INFER),
        (None, r"/v2/(?:system|cuda)sharedmemory(?:/.*)?", Scope.INFER),  # a key's own regions, for its inferences
        ("POST", r"/v2/repository/index", Scope.READ),
        ("POST", r"/v2/endpoints/[^/]+/infer", Scope.INFER),
        ("GET", r"/v2/endpoints(?:/.*)?", Scope.READ),
        (None, r"/v2/endpoints(?:/.*)?", Scope.ADMIN),
        ("POST", r"/v2/repository/models/[^/]+/(?:load|unload)", Scope.ADMIN),
        (None, r"/v2/batch/jobs(?:/.*)?", Scope.ADMIN),
        ("GET", r"/v2/jobs(?:/.*)?", Scope.INFER),  # a key sees its own jobs; admin sees everyone's
        ("DELETE", r"/v2/jobs/[^/]+", Scope.INFER),
    )
)
"""(method or any, path pattern, scope), first match wins; a path matching none needs ``read``."""

GRPC_METHODS: dict[str, Scope | None] = {
    "ServerLive": None,
    "ServerReady": None,
    "ModelReady": None,
    "ServerMetadata": Scope.READ,
    "ModelMetadata": Scope.READ,
    "ModelConfig": Scope.READ,
    "ModelStatistics": Scope.READ,
    "RepositoryIndex": Scope.READ,
    "ModelInfer": Scope.INFER,
    "ModelStreamInfer": Scope.INFER,
    "RepositoryModelLoad": Scope.ADMIN,
    "RepositoryModelUnload": Scope.ADMIN,
    "SystemSharedMemoryStatus": Scope.INFER,
    "SystemSharedMemoryRegister": Scope.INFER,
    "SystemSharedMemoryUnregister": Scope.INFER,
    "CudaSharedMemoryStatus": Scope.INFER,
    "CudaSharedMemoryRegister": Scope.INFER,
    "CudaSharedMemoryUnregister": Scope.INFER,
}
"""Method names of ``inference.GRPCInferenceService``; any other method needs ``admin``."""

OTHER_GRPC_METHODS: dict[str, Scope | None] = {
    "/grpc.health.v1.Health/Check": None,  # orchestrators' gRPC probes send no key, as the readiness probes above
    "/grpc.health.v1.Health/Watch": None,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": Scope.READ,  # what services exist: metadata
}
"""Methods of the services served beside the inference service (server/grpc/health.py), and their scopes."""


class RouteScopes:
    """The HTTP table, plus the Vertex AI routes the settings name (health open, predict ``infer``)."""

    def __init__(self, health_route: str | None = None, predict_route: str | None = None) -> None:
        self._exact: dict[tuple[str, str], Scope | None] = {}
        if health_route:
            self._exact["GET", health_route] = None
        if predict_route:
            self._exact["POST", predict_route] = Scope.INFER

    def scope_for(self, method: str, path: str) -> Scope | None:
        """The scope ``method path`` needs, or None when it is open."""
        if (method, path) in self._exact:
            return self._exact[method, path]
        for wanted, pattern, scope in HTTP_ROUTES:
            if (wanted is None or wanted == method) and pattern.match(path):
                return scope
        return Scope.READ  # HEAD, OPTIONS, /docs, /openapi.json, metadata and unknown paths


def grpc_scope(full_method: str) -> Scope | None:
    """The scope a gRPC method (``/inference.GRPCInferenceService/ModelInfer``) needs."""
    if full_method in OTHER_GRPC_METHODS:
        return OTHER_GRPC_METHODS[full_method]
    service, _, name = full_method.rpartition("/")
    if service != "/inference.GRPCInferenceService":
        return Scope.ADMIN  # reflection, health or anything else registered later: closed unless admin
    return GRPC_METHODS.get(name, Scope.ADMIN)
