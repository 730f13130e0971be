"""Start and stop the asyncio gRPC server that serves ``inference.GRPCInferenceService``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from inferd.dataplane import DataPlane
from inferd.observability.request_context import RequestObserver
from inferd.security.auth import Authenticator
from inferd.server.grpc.generated import grpc_service_pb2_grpc
from inferd.server.grpc.health import add_health_and_reflection
from inferd.server.grpc.servicer import InferenceServicer


class GrpcBindError(OSError):
    """The gRPC server could not listen on the address it was given."""


async def start_grpc_server(dataplane: DataPlane, host: str, port: int, max_message_bytes: int, *,  # noqa: PLR0913
                            interceptors: Sequence[Any] = (), credentials: Any = None,
                            observer: RequestObserver | None = None,
                            authenticator: Authenticator | None = None, reuse_port: bool = False) -> grpc.aio.Server:
    """Serve ``dataplane`` over gRPC on ``host:port``; return the started server.

    ``interceptors`` (``grpc.aio.ServerInterceptor``) see every call first, such as the API key check;
    with ``credentials`` (``grpc.ssl_server_credentials``) the port speaks TLS only. ``observer`` gives calls
    their request ids (the HTTP server's, so ids from both share one sequence). ``authenticator`` (the
    interceptor's) tells the servicer whose shared memory regions a call names. The standard health service and
    server reflection are served beside it (server/grpc/health.py).

    Messages up to ``max_message_bytes`` are taken and sent. The port is not shared with another process
    (no SO_REUSEPORT), so a port in use is an error here rather than a server that never gets requests; but
    ``reuse_port`` for the workers of ``--workers N``, whose supervisor reserved it.
    Stop it with :func:`stop_grpc_server` (or ``await server.stop(grace)``).
    """
    server = grpc.aio.server(interceptors=list(interceptors) or None, options=[
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ])
    register = grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server
    register(InferenceServicer(dataplane, observer, authenticator), server)  # type: ignore[no-untyped-call]  # generated untyped
    add_health_and_reflection(server, dataplane)
    address = grpc_address(host, port)
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError:
        bound = 0
    if bound == 0:
        await server.stop(None)
        raise GrpcBindError(f"gRPC port {port} on {host} is in use (or not an address of this machine); "
                            "choose another with --grpc-port")
    await server.start()
    return server


async def stop_grpc_server(server: grpc.aio.Server, grace: float | None = 5.0) -> None:
    """Stop taking calls, give those in flight ``grace`` seconds to finish, then cancel the rest."""
    await server.stop(grace)


def grpc_address(host: str, port: int) -> str:
    """``host:port`` as gRPC wants it, with an IPv6 address in brackets."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"
