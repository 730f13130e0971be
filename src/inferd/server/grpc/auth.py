"""The gRPC side of API keys: a server interceptor that reads ``authorization`` / ``x-api-key`` metadata and
answers UNAUTHENTICATED or PERMISSION_DENIED before the servicer sees the call, with the call's request id in
the trailing metadata as every other answer has. Installed only when keys are configured."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from inferd.errors import InferError
from inferd.observability.request_context import GRPC_KEY, RequestObserver
from inferd.security.auth import Authenticator, key_from_metadata
from inferd.security.scopes import grpc_scope
from inferd.server.status import GRPC_STATUS


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    def __init__(self, authenticator: Authenticator, observer: RequestObserver | None = None) -> None:
        self.authenticator = authenticator
        self.observer = observer or RequestObserver()

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                handler_call_details: Any) -> Any:
        method: str = handler_call_details.method
        try:
            self.authenticator.check(key_from_metadata(handler_call_details.invocation_metadata),
                                     grpc_scope(method), "gRPC", method.rpartition("/")[2])
        except InferError as exc:
            handler = await continuation(handler_call_details)
            request_id = self.observer.from_grpc_metadata(handler_call_details.invocation_metadata)
            return _refusal(handler, grpc.StatusCode[GRPC_STATUS[exc.code]], exc.message, ((GRPC_KEY, request_id),))
        return await continuation(handler_call_details)


def _refusal(handler: Any, code: grpc.StatusCode, message: str, trailing: tuple[tuple[str, str], ...]) -> Any:
    """A handler of the same shape (unary or streaming) as the method's that only aborts the call."""

    async def unary(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message, trailing)

    async def streaming(_requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(code, message, trailing)
        yield None  # pragma: no cover - abort raises; this makes the function an async generator

    if handler is None or (not handler.request_streaming and not handler.response_streaming):
        return grpc.unary_unary_rpc_method_handler(unary)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary)
    return grpc.unary_stream_rpc_method_handler(streaming)
