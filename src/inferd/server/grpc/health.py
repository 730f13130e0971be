"""The standard gRPC health service (``grpc.health.v1.Health``) and server reflection, beside the inference service.

Health answers from the DataPlane on every call rather than from a table kept up to date, so it can never
disagree with ``ServerReady`` / ``ModelReady``: the service ``""`` (and ``inference.GRPCInferenceService``) is
SERVING when the server is ready, a model's name is SERVING when its model is ready; an unknown name is
NOT_FOUND for ``Check`` and SERVICE_UNKNOWN for ``Watch``, as the health protocol says. Kubernetes gRPC probes and
``grpc_health_probe`` send no metadata, so health is open like the readiness probes (security/scopes.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from inferd.dataplane import DataPlane
from inferd.errors import ErrorCode, InferError
from inferd.server.grpc.generated import POOL, grpc_service_pb2

INFERENCE_SERVICE = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name

SERVING: int = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: int = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN: int = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthServicer(health_pb2_grpc.HealthServicer):  # type: ignore[misc]  # generated, untyped
    """``Check`` and ``Watch`` over the DataPlane's readiness. ``Watch`` looks again every ``poll_s`` seconds and
    sends a message only when the status changed (and the first one at once)."""

    def __init__(self, dataplane: DataPlane, poll_s: float = 1.0) -> None:
        self.dataplane = dataplane
        self.poll_s = poll_s

    def status(self, service: str) -> int:
        """The health status of ``service``: the server (``""`` or the inference service's name) or a model."""
        if service in ("", INFERENCE_SERVICE, HEALTH_SERVICE):
            return SERVING if self.dataplane.ready() else NOT_SERVING
        try:
            return SERVING if self.dataplane.model_ready(service) else NOT_SERVING
        except InferError as exc:
            if exc.code is ErrorCode.NOT_FOUND:
                return SERVICE_UNKNOWN
            return NOT_SERVING

    async def Check(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802  # gRPC's name
        found = self.status(request.service)
        if found == SERVICE_UNKNOWN:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"unknown service or model '{request.service}': ask for '' (the server), "
                                f"'{INFERENCE_SERVICE}' or a model's name")
        return health_pb2.HealthCheckResponse(status=found)

    async def Watch(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:  # noqa: N802
        last = None
        while True:
            found = self.status(request.service)
            if found != last:
                yield health_pb2.HealthCheckResponse(status=found)
                last = found
            await asyncio.sleep(self.poll_s)


def add_health_and_reflection(server: grpc.aio.Server, dataplane: DataPlane) -> None:
    """Register the health service and server reflection (listing the inference service, health and reflection
    itself, so ``grpcurl list`` and reflection clients find them) on ``server`` before it starts."""
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(dataplane), server)
    reflection.enable_server_reflection((INFERENCE_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), server,
                                        pool=_reflected_pool())


def _reflected_pool() -> Any:
    """Our messages live in a descriptor pool of their own (generated/__init__.py), health's and reflection's in
    protobuf's default one; reflection answers from one pool, so theirs are added to ours (once)."""
    for module in (health_pb2, reflection_pb2):
        try:
            POOL.FindFileByName(module.DESCRIPTOR.name)
        except KeyError:
            POOL.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    return POOL
