"""The ``inference.GRPCInferenceService`` servicer: protobuf messages in, DataPlane calls, messages out.

Nothing here decides anything about a request: the DataPlane checks it and raises :class:`InferError`,
which becomes a gRPC status through the one table in :mod:`inferd.server.status`. Any other exception is a
bug: it is logged and answered with INTERNAL, and the server keeps serving.

Tensors arrive either as typed ``contents`` or as ``raw_input_contents`` (one entry per input, in input
order) and always leave as ``raw_output_contents``, which is what tritonclient reads.
"""
# ruff: noqa: N802 - the handlers carry the protocol's method names (ServerLive, ModelInfer, ...)

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import json_format

from inferd.calls import GeneralCall, Routing
from inferd.dataplane import DataPlane
from inferd.decoupled import StreamResponse
from inferd.errors import ErrorCode, InferError, internal, invalid
from inferd.inference import InferenceRequest, InferenceResponse, ModelMetadata, RequestInput, RequestOutput
from inferd.observability.request_context import GRPC_KEY, REQUEST_ID, RequestObserver
from inferd.security.auth import Authenticator, key_from_metadata
from inferd.server.grpc.generated import grpc_service_pb2 as pb
from inferd.server.grpc.generated import model_config_pb2 as config_pb
from inferd.server.routing_headers import GRPC_FORCED
from inferd.server.routing_headers import GRPC_KEY as ROUTE_KEY
from inferd.server.status import GRPC_STATUS
from inferd.server.triton import config_to_json
from inferd.shared_memory import CUDA_REFUSAL, NO_KEY, REGION, Regions, SharedMemoryRegistry
from inferd.stats import ModelStats
from inferd.tensors import DATATYPES, from_raw, to_raw

log = logging.getLogger(__name__)

_STATUS: dict[ErrorCode, grpc.StatusCode] = {code: grpc.StatusCode[name] for code, name in GRPC_STATUS.items()}

CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""The typed ``InferTensorContents`` field that carries each datatype; FP16 and BF16 have none (raw only)."""

_UINT64_LIMIT = 2**64
_INT64_LIMIT = 2**63

Metadata = tuple[tuple[str, str], ...]
Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[["InferenceServicer", Request, Any], Awaitable[Response]]


def _answers_errors(handler: Handler[Request, Response]) -> Handler[Request, Response]:
    """Give a unary call its request id and turn what the handler raises into a gRPC status."""

    @functools.wraps(handler)
    async def wrapper(self: InferenceServicer, request: Request, context: Any) -> Response:
        trailing = self.request_id_metadata(context)
        token = REQUEST_ID.set(trailing[0][1])  # for the log records of this call
        try:
            context.set_trailing_metadata(trailing)
            return await handler(self, request, context)
        except InferError as exc:
            await _abort(context, _STATUS[exc.code], exc.message, trailing)
        except Exception as exc:  # a bug, not the caller's fault: answer it, keep serving
            log.exception("gRPC %s failed", handler.__name__)
            await _abort(context, grpc.StatusCode.INTERNAL, _unexpected(exc), trailing)
        finally:
            REQUEST_ID.reset(token)

    return wrapper


async def _abort(context: Any, code: grpc.StatusCode, message: str, trailing: Metadata) -> NoReturn:
    await context.abort(code, message, trailing)
    raise AssertionError("grpc context.abort returned")  # pragma: no cover - abort always raises


def _unexpected(exc: Exception) -> str:
    return f"internal error: {type(exc).__name__}: {exc}"


class InferenceServicer:
    """Every call of ``inference.GRPCInferenceService`` that inferd serves, over one :class:`DataPlane`."""

    def __init__(self, dataplane: DataPlane, observer: RequestObserver | None = None,
                 authenticator: Authenticator | None = None) -> None:
        self._dataplane = dataplane
        self._observer = observer or RequestObserver()
        self._authenticator = authenticator
        """Who a caller is, for its shared memory regions (the interceptor checked the key already)."""

    def request_id_metadata(self, context: Any) -> Metadata:
        """``x-request-id`` for the trailing metadata: the caller's, when usable, else a new one (as over HTTP)."""
        return ((GRPC_KEY, self._observer.from_grpc_metadata(context.invocation_metadata())),)

    # -- health and metadata -------------------------------------------------------------------------------
    @_answers_errors
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._dataplane.live())

    @_answers_errors
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._dataplane.ready())

    @_answers_errors
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        try:
            ready = self._dataplane.model_ready(request.name, request.version or None)
        except InferError as exc:
            if exc.code is not ErrorCode.NOT_FOUND:
                raise
            ready = False  # as Triton: an unknown model or version is simply not ready
        return pb.ModelReadyResponse(ready=ready)

    @_answers_errors
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        metadata = self._dataplane.server_metadata()
        return pb.ServerMetadataResponse(name=metadata.name, version=metadata.version,
                                         extensions=metadata.extensions)

    @_answers_errors
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        return encode_model_metadata(self._dataplane.model_metadata(request.name, request.version or None))

    @_answers_errors
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        config = self._dataplane.model_config(request.name, request.version or None)
        message = json_format.ParseDict(config_to_json(config), config_pb.ModelConfig(), ignore_unknown_fields=True)
        return pb.ModelConfigResponse(config=message)

    @_answers_errors
    async def ModelStatistics(self, request: pb.ModelStatisticsRequest,
                              context: Any) -> pb.ModelStatisticsResponse:
        stats = self._dataplane.statistics(request.name or None, request.version or None)
        return encode_statistics(stats)

    # -- inference -----------------------------------------------------------------------------------------
    @_answers_errors
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        return await self._infer(request, context)

    async def ModelStreamInfer(self, requests: AsyncIterator[pb.ModelInferRequest],
                               context: Any) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """The requests one after the other, in order, each answered by :meth:`DataPlane.stream`: one response
        (a decoupled model: any number, then the final flag), each with Triton's ``triton_final_response``; a
        failed request answers with ``error_message`` and the stream goes on. The stream has one request id.
        A client that cancels the stream stops the model (the responses' iterator is closed)."""
        trailing = self.request_id_metadata(context)
        context.set_trailing_metadata(trailing)
        REQUEST_ID.set(trailing[0][1])  # grpc.aio runs each call in a task of its own: this context is the call's
        async for request in requests:
            async for message in self._stream_one(request, context):
                yield message

    async def _stream_one(self, request: pb.ModelInferRequest,
                          context: Any) -> AsyncIterator[pb.ModelStreamInferResponse]:
        empty_final = _wants_empty_final(request)
        call = GeneralCall(decode_infer_request(request), self._regions(context))
        try:
            async with aclosing(self._dataplane.stream(call)) as responses:
                async for item in responses:
                    message = _stream_message(request, item, empty_final)
                    if message is not None:
                        yield message
            return
        except InferError as exc:
            text = exc.message
        except Exception as exc:  # a bug: answer it on the stream, keep the stream open
            log.exception("gRPC ModelStreamInfer failed")
            text = _unexpected(exc)
        echo = pb.ModelInferResponse(model_name=request.model_name, model_version=request.model_version,
                                     id=request.id)
        echo.parameters[FINAL_RESPONSE].bool_param = True
        yield pb.ModelStreamInferResponse(error_message=text, infer_response=echo)

    async def _infer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        call = GeneralCall(decode_infer_request(request), self._regions(context), endpoint="ModelInfer RPC")
        call.routing = _routing(context.invocation_metadata())  # an endpoint's variant answers in the parameters
        return encode_infer_response(await self._dataplane.infer(call))

    def _regions(self, context: Any) -> Regions | None:
        registry = self._dataplane.shared_memory
        if registry is None or self._authenticator is None:
            return None if registry is None else registry.shared
        return registry.caller(functools.partial(self._owner, context))

    def _owner(self, context: Any) -> str:
        """The name of the caller's API key: the owner of its shared memory regions."""
        if self._authenticator is None:
            return NO_KEY
        return self._authenticator.principal(key_from_metadata(context.invocation_metadata())).name

    # -- shared memory -------------------------------------------------------------------------------------
    @_answers_errors
    async def SystemSharedMemoryStatus(self, request: pb.SystemSharedMemoryStatusRequest,
                                       context: Any) -> pb.SystemSharedMemoryStatusResponse:
        response = pb.SystemSharedMemoryStatusResponse()
        for region in self._registry().status(self._owner(context), request.name):
            response.regions[region.name].CopyFrom(pb.SystemSharedMemoryStatusResponse.RegionStatus(
                name=region.name, key=region.key, offset=region.offset, byte_size=region.byte_size))
        return response

    @_answers_errors
    async def SystemSharedMemoryRegister(self, request: pb.SystemSharedMemoryRegisterRequest,
                                         context: Any) -> pb.SystemSharedMemoryRegisterResponse:
        self._registry().register(self._owner(context), request.name, request.key, request.offset, request.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    @_answers_errors
    async def SystemSharedMemoryUnregister(self, request: pb.SystemSharedMemoryUnregisterRequest,
                                           context: Any) -> pb.SystemSharedMemoryUnregisterResponse:
        self._registry().unregister(self._owner(context), request.name)
        return pb.SystemSharedMemoryUnregisterResponse()

    def _registry(self) -> SharedMemoryRegistry:
        if self._dataplane.shared_memory is None:
            raise invalid("system shared memory is not enabled on this server")
        return self._dataplane.shared_memory

    # As Triton built without GPU support: no CUDA region is ever registered, so the status is empty and
    # unregistering has nothing to do (Triton's examples unregister everything first); registering is refused.
    @_answers_errors
    async def CudaSharedMemoryStatus(self, request: pb.CudaSharedMemoryStatusRequest,
                                     context: Any) -> pb.CudaSharedMemoryStatusResponse:
        if request.name:
            raise InferError(ErrorCode.NOT_FOUND, f"Unable to find cuda shared memory region: {request.name!r}; "
                             f"{CUDA_REFUSAL}")
        return pb.CudaSharedMemoryStatusResponse()

    @_answers_errors
    async def CudaSharedMemoryRegister(self, request: pb.CudaSharedMemoryRegisterRequest,
                                       context: Any) -> pb.CudaSharedMemoryRegisterResponse:
        raise invalid(f"failed to register CUDA shared memory region {request.name!r}: {CUDA_REFUSAL}")

    @_answers_errors
    async def CudaSharedMemoryUnregister(self, request: pb.CudaSharedMemoryUnregisterRequest,
                                         context: Any) -> pb.CudaSharedMemoryUnregisterResponse:
        return pb.CudaSharedMemoryUnregisterResponse()

    # -- model repository ----------------------------------------------------------------------------------
    @_answers_errors
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest,
                              context: Any) -> pb.RepositoryIndexResponse:
        entries = self._dataplane.repository_index(ready_only=request.ready)
        return pb.RepositoryIndexResponse(models=[
            pb.RepositoryIndexResponse.ModelIndex(name=e.name, version=e.version, state=e.state, reason=e.reason)
            for e in entries
        ])

    @_answers_errors
    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest,
                                  context: Any) -> pb.RepositoryModelLoadResponse:
        # Triton's parameters: "config" (string_param), "file:<version>/<name>" (bytes_param)
        await self._dataplane.load(request.model_name, _repository_parameters(request.parameters))
        return pb.RepositoryModelLoadResponse()  # a model that did not load raised, with the reasons

    @_answers_errors
    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest,
                                    context: Any) -> pb.RepositoryModelUnloadResponse:
        # tritonclient always sends unload_dependents; inferd models have no dependents
        await self._dataplane.unload(request.model_name, _repository_parameters(request.parameters))
        return pb.RepositoryModelUnloadResponse()


def _routing(metadata: Any) -> Routing | None:
    """What a call's metadata asks of an endpoint (the REST headers' names: ``x-inferd-variant``, ...)."""
    routing = None
    for key, value in metadata or ():
        if isinstance(value, str) and (key in GRPC_FORCED or key == ROUTE_KEY):
            routing = routing or Routing()
            if key == ROUTE_KEY:
                routing.key = value
            else:
                routing.variant = value
    return routing


FINAL_RESPONSE = "triton_final_response"
"""Set on every stream response, as Triton does: whether it is the request's last."""
EMPTY_FINAL = "triton_enable_empty_final_response"
"""A request parameter (tritonclient's ``enable_empty_final_response``): send the final flag of a decoupled
model's request as an empty response of its own (else, as Triton, it is not sent)."""


def _wants_empty_final(request: pb.ModelInferRequest) -> bool:
    """Whether the request asks for the empty final response; the parameter is the stream's, not the model's."""
    if EMPTY_FINAL not in request.parameters:
        return False
    wanted = bool(request.parameters[EMPTY_FINAL].bool_param)
    del request.parameters[EMPTY_FINAL]
    return wanted


def _stream_message(request: pb.ModelInferRequest, item: StreamResponse,
                    empty_final: bool) -> pb.ModelStreamInferResponse | None:
    """One stream message; None for the final flag alone unless the request asked for it as an empty response
    (which echoes the request's model, version and id, as Triton's)."""
    if item.response is not None:
        message = encode_infer_response(item.response)
    elif empty_final:
        message = pb.ModelInferResponse(model_name=request.model_name, model_version=request.model_version,
                                        id=request.id)
    else:
        return None
    message.parameters[FINAL_RESPONSE].bool_param = item.final
    return pb.ModelStreamInferResponse(infer_response=message)


def _repository_parameters(parameters: Mapping[str, pb.ModelRepositoryParameter]) -> dict[str, Any]:
    """Repository parameters as plain values (bool, int, str or bytes; None for one with no value)."""
    return {key: getattr(value, value.WhichOneof("parameter_choice") or "", None) for key, value in parameters.items()}


# -- requests ----------------------------------------------------------------------------------------------
def decode_infer_request(request: pb.ModelInferRequest) -> InferenceRequest:
    """A ``ModelInferRequest`` as the DataPlane's :class:`InferenceRequest`."""
    raw = request.raw_input_contents
    for tensor in request.inputs if raw else ():  # checked first, as Triton does: its clients match on the words
        if tensor.contents.ListFields() and REGION not in tensor.parameters:
            raise _contents_and_raw(tensor.name, request.model_name)
    shared = [REGION in tensor.parameters for tensor in request.inputs] if raw else []
    if raw and len(raw) != len(request.inputs) - sum(shared):
        which = " not in shared memory" if any(shared) else ""
        raise invalid(
            f"the request has {len(raw)} raw_input_contents entries for {len(request.inputs) - sum(shared)} inputs"
            f"{which}; send one entry per such input, in the order of the inputs"
        )
    contents = iter(raw)
    inputs = [decode_input(tensor, next(contents) if raw and not shared[i] else None, request.model_name)
              for i, tensor in enumerate(request.inputs)]
    outputs = [RequestOutput(o.name, decode_parameters(o.parameters)) for o in request.outputs]
    return InferenceRequest(
        model_name=request.model_name,
        inputs=inputs,
        model_version=request.model_version or None,
        outputs=outputs or None,
        id=request.id or None,
        parameters=decode_parameters(request.parameters),
    )


def decode_input(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None, model: str) -> RequestInput:
    """One input: an array from its raw bytes, or the list of its typed contents."""
    name, datatype, shape = tensor.name, tensor.datatype, list(tensor.shape)
    if datatype not in DATATYPES:
        raise invalid(f"input {name!r}: unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}")
    if REGION in tensor.parameters:  # read from its region on the one inference path
        if tensor.contents.ListFields():
            raise invalid(f"unexpected 'content' provided when using shared memory for input tensor '{name}' "
                          f"for model '{model}'; send one or the other")
        return RequestInput(name, datatype, shape, None, decode_parameters(tensor.parameters))
    if raw is None:
        data: Any = typed_contents(tensor)
    elif tensor.contents.ListFields():
        raise _contents_and_raw(name, model)
    else:
        data = from_raw(name, datatype, shape, raw)
    return RequestInput(name, datatype, shape, data, decode_parameters(tensor.parameters))


def _contents_and_raw(name: str, model: str) -> InferError:
    """Triton's words (grpc_explicit_*_content_client.py match on them), then what to do."""
    return invalid(f"contents field must not be specified when using raw_input_contents for '{name}' "
                   f"for model '{model}'; send one or the other")


def typed_contents(tensor: pb.ModelInferRequest.InferInputTensor) -> list[Any]:
    """The values of an input sent as typed ``contents``, from the field its datatype uses."""
    field = CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise invalid(f"input {tensor.name!r}: {tensor.datatype} has no typed contents field; "
                      "send it in raw_input_contents")
    used = [descriptor.name for descriptor, _ in tensor.contents.ListFields()]
    if any(name != field for name in used):
        raise invalid(f"input {tensor.name!r}: {tensor.datatype} data goes in contents.{field}, "
                      f"got {', '.join(used)}")
    return list(getattr(tensor.contents, field))


def decode_parameters(parameters: Mapping[str, pb.InferParameter]) -> dict[str, Any] | None:
    """Protobuf parameters as a plain dict (None when there are none)."""
    decoded = {key: _parameter_value(value) for key, value in parameters.items()}
    return decoded or None


def _parameter_value(parameter: pb.InferParameter) -> bool | int | float | str | None:
    choice = parameter.WhichOneof("parameter_choice")
    return None if choice is None else getattr(parameter, choice)


# -- responses ---------------------------------------------------------------------------------------------
def encode_infer_response(response: InferenceResponse) -> pb.ModelInferResponse:
    """The DataPlane's response as a ``ModelInferResponse`` with every output in ``raw_output_contents``."""
    message = pb.ModelInferResponse(model_name=response.model_name, model_version=response.model_version,
                                    id=response.id or "")
    encode_parameters(response.parameters, message.parameters)
    for output in response.outputs:
        tensor = message.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
        encode_parameters(output.parameters, tensor.parameters)
        # an output written into shared memory has an empty entry, as Triton's: clients find outputs by index
        message.raw_output_contents.append(b"" if output.in_shared_memory else to_raw(output.data))
    return message


def encode_parameters(values: Mapping[str, Any] | None, into: Any) -> None:
    """Write a plain dict into a protobuf ``map<string, InferParameter>``."""
    for key, value in (values or {}).items():
        _set_parameter(into[key], key, value)


def _set_parameter(parameter: pb.InferParameter, key: str, value: Any) -> None:
    if isinstance(value, bool):
        parameter.bool_param = value
    elif isinstance(value, int) and _INT64_LIMIT <= value < _UINT64_LIMIT:
        parameter.uint64_param = value
    elif isinstance(value, int):
        parameter.int64_param = value
    elif isinstance(value, float):
        parameter.double_param = value
    elif isinstance(value, str):
        parameter.string_param = value
    else:
        raise internal(f"parameter {key!r} is {type(value).__name__}; gRPC carries bool, int, float or str")


def encode_model_metadata(metadata: ModelMetadata) -> pb.ModelMetadataResponse:
    return pb.ModelMetadataResponse(
        name=metadata.name,
        versions=metadata.versions,
        platform=metadata.platform,
        inputs=[_tensor_metadata(spec) for spec in metadata.inputs],
        outputs=[_tensor_metadata(spec) for spec in metadata.outputs],
    )


def _tensor_metadata(spec: Mapping[str, Any]) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=spec["name"], datatype=spec["datatype"],
                                                   shape=spec["shape"])


def encode_statistics(stats: list[ModelStats]) -> pb.ModelStatisticsResponse:
    """Statistics in Triton's message; :meth:`ModelStats.to_dict` already has Triton's JSON shape."""
    payload = {"model_stats": [s.to_dict() for s in stats]}
    response: pb.ModelStatisticsResponse = json_format.ParseDict(payload, pb.ModelStatisticsResponse(),
                                                                 ignore_unknown_fields=True)
    return response

