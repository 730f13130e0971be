"""What the one inference path asks of a request, whatever wire it came on.

:meth:`DataPlane.submit <inferd.dataplane.DataPlane.submit>` resolves the model, and then needs two things from the
request, which a :class:`Call` gives: its inputs checked against the model and turned into arrays
(:meth:`Call.prepare`), and, once the model has run, the answer in the caller's form (:meth:`Call.respond`).
Everything else (scheduling, statistics, data capture, errors) happens in the DataPlane, once for every transport.

:class:`GeneralCall` is the call of an :class:`~inferd.inference.InferenceRequest`: gRPC, KServe V1, SageMaker,
batch jobs and the CLI decode into one. A codec may bring its own call for a wire form it reads faster, such as
the plain V2 JSON body (:mod:`inferd.codecs.v2_body`), as long as it accepts and answers exactly what the
general call would.

Tensors in shared memory (Triton's system shared memory extension, :mod:`inferd.shared_memory`) are resolved here
too, once for every transport: :func:`prepare_inputs` reads an input that names a region from it, and
:func:`build_response` writes an output asked for in a region into it (the response then holds no data for it).
A call is given the caller's :class:`~inferd.shared_memory.Regions` by the transport that knows who the caller
is; a call without them (asynchronous jobs, batch jobs) refuses a tensor that names a region.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from inferd.classification import PARAMETER as CLASSIFICATION
from inferd.classification import Classes, Labels, classify, requested_classes
from inferd.errors import InferError, invalid
from inferd.inference import InferenceRequest, InferenceResponse, RequestInput, RequestOutput, ResponseOutput
from inferd.shared_memory import BYTE_SIZE, OFFSET, REGION, Regions, SharedOutput, tensor_location
from inferd.signature import FREE, Signature, check_all_inputs_present, check_request_input
from inferd.tensors import element_count, from_raw, numpy_dtype, to_array, to_raw

if TYPE_CHECKING:
    from inferd.loading import Loaded
    from inferd.scheduling.scheduler import RunResult

Arrays = dict[str, np.ndarray]
T_co = TypeVar("T_co", covariant=True)


class Prepared(Protocol):
    """A request checked against its model: what the scheduler runs, and what the answer needs."""

    @property
    def arrays(self) -> Arrays: ...

    @property
    def rows(self) -> int:
        """The batch size (1 for an unbatched model; 0 for an empty batch, which the model never sees)."""
        ...

    @property
    def priority(self) -> object: ...

    @property
    def timeout_us(self) -> int | None: ...

    @property
    def key(self) -> tuple[object, ...] | None:
        """What the scheduler compares to batch requests together, when known in advance (else None)."""
        ...

    @property
    def id(self) -> str | None: ...

    @property
    def parameters(self) -> dict[str, Any] | None: ...

    @property
    def answered(self) -> Sequence[str]:
        """The outputs the answer holds, in order (for data capture)."""
        ...

    @property
    def classes(self) -> dict[str, Classes] | None:
        """The outputs asked for as their top classes (Triton's classification extension), by name."""
        ...

    @property
    def shared_outputs(self) -> dict[str, SharedOutput] | None:
        """The outputs asked for in shared memory regions, by name (None when none is)."""
        ...


ROUTE_VARIANT = "inferd_variant"
"""The request parameter that forces an endpoint's variant (transports put their headers' value there too)."""
ROUTE_KEY = "inferd_route_key"
"""The request parameter of a sticky route key: the same key lands on the same variant while weights stay."""


@dataclass(slots=True)
class Routing:
    """What a request asks of an endpoint (a forced variant, a route key), and, once the DataPlane resolved an
    endpoint name, which endpoint and variant answer it."""

    variant: str | None = None
    key: str | None = None
    endpoint: str | None = None
    answered: str | None = None
    shown: Mapping[str, str] | None = None
    """Set with ``answered``: :meth:`parameters` as one read-only mapping shared by the variant's requests (the
    V2 codec writes it as it is, and builds no dict per request)."""

    def parameters(self) -> dict[str, Any]:
        """What a V2 response says of its route."""
        return {"endpoint": self.endpoint, "variant": self.answered}


def routing_from(parameters: Any, routing: Routing | None = None) -> Routing:
    """``routing`` (a new one when None) with what a request's parameters ask for (``inferd_variant``,
    ``inferd_route_key``) where the transport set nothing."""
    routing = routing if routing is not None else Routing()
    if isinstance(parameters, dict) and routing.variant is None and routing.key is None:
        variant, key = parameters.get(ROUTE_VARIANT), parameters.get(ROUTE_KEY)
        routing.variant = variant if isinstance(variant, str) else None
        routing.key = None if key is None else str(key)
    return routing


class Call(Protocol[T_co]):
    """One request on the inference path, and how it is answered (a ``T_co``)."""

    routing: Routing | None
    """Set by a transport from its headers (forced variant, route key), or by :meth:`route`; the DataPlane
    records the endpoint and variant that answer here, for the transport's response header."""

    @property
    def model_name(self) -> str: ...

    @property
    def model_version(self) -> str | None: ...

    def route(self) -> Routing:
        """:attr:`routing` (made when the transport set none), with what the request's parameters ask for where
        the transport's headers said nothing (called only for a request naming an endpoint)."""
        ...

    def prepare(self, loaded: Loaded, max_elements: int) -> Prepared:
        """Check the request against the loaded model version and build its arrays; INVALID_ARGUMENT (with what is
        wrong) when it does not fit. No input may have more than ``max_elements`` elements."""
        ...

    def respond(self, version: str, signature: Signature, prepared: Any, result: RunResult) -> T_co:
        """The answer to the caller, from what the model returned (``prepared`` is what :meth:`prepare` gave)."""
        ...


@dataclass(slots=True)
class GeneralPrepared:
    arrays: Arrays
    rows: int
    answered: Sequence[str]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    priority: object = None
    timeout_us: int | None = None
    key: tuple[object, ...] | None = None
    classes: dict[str, Classes] | None = None
    shared_outputs: dict[str, SharedOutput] | None = None


class GeneralCall:
    """The call of an :class:`InferenceRequest`, answered with an :class:`InferenceResponse`; ``regions`` are the
    shared memory regions its caller may name (None: tensors in shared memory are refused). ``endpoint`` names how
    it came, for Triton's wording of a refusal (``ModelInfer RPC doesn't support ...``)."""

    __slots__ = ("endpoint", "regions", "request", "routing")

    def __init__(self, request: InferenceRequest, regions: Regions | None = None,
                 endpoint: str = "this endpoint") -> None:
        self.request = request
        self.regions = regions
        self.endpoint = endpoint
        self.routing: Routing | None = None

    @property
    def model_name(self) -> str:
        return self.request.model_name

    @property
    def model_version(self) -> str | None:
        return self.request.model_version

    def route(self) -> Routing:
        self.routing = routing_from(self.request.parameters, self.routing)
        return self.routing

    def prepare(self, loaded: Loaded, max_elements: int) -> GeneralPrepared:
        return prepare_request(self.request, loaded.signature, loaded.scheduler.policy.max_batch_size, max_elements,
                               loaded.labels, self.regions)

    def respond(self, version: str, signature: Signature, prepared: GeneralPrepared,
                result: RunResult) -> InferenceResponse:
        response = build_response(self.request.model_name, version, signature, prepared, result)
        if self.routing is not None and self.routing.endpoint is not None:
            response.parameters = self.routing.parameters()
        return response


def prepare_request(request: InferenceRequest, signature: Signature, max_batch_size: int,
                    max_elements: int, labels: Labels | None = None,
                    regions: Regions | None = None) -> GeneralPrepared:
    """The general check of a request against a model version's signature and batch limit; ``labels`` name the
    classes of the outputs that have them (for the classification extension), ``regions`` the shared memory
    regions the caller may name (None: none)."""
    arrays, batch_size = prepare_inputs(signature, request.inputs, max_elements, regions)
    if batch_size is not None and batch_size > max_batch_size:
        raise invalid(f"a batch of {batch_size} exceeds the model's max_batch_size of {max_batch_size}")
    wanted = requested_outputs(signature, request.outputs)
    classes = shared = None
    if request.outputs:
        classes = requested_classes(signature, request.outputs, labels or {})
        shared = shared_outputs(request.outputs, regions)
    priority, timeout_us = scheduling_parameters(request.parameters)
    rows = 1 if batch_size is None else batch_size  # 0 rows is an empty batch, answered without the model
    return GeneralPrepared(arrays, rows, wanted, request.id, request.parameters, priority, timeout_us,
                           classes=classes, shared_outputs=shared)


def build_response(model_name: str, version: str, signature: Signature, prepared: Prepared,
                   result: RunResult, into_regions: bool = True) -> InferenceResponse:
    """The response holding the request's rows of each output it answers with: as the model gave them, or as
    their top classes where the request asked for them (:mod:`inferd.classification`). An output asked for in a
    shared memory region is written into it (unless not ``into_regions``: data capture's copy of the answer) and
    marked :attr:`~inferd.inference.ResponseOutput.in_shared_memory`; INVALID_ARGUMENT when it does not fit."""
    datatypes = signature.output_datatypes  # the scheduler checked the outputs: each has this datatype
    classes = prepared.classes
    shared = prepared.shared_outputs if into_regions else None
    outputs = []
    for name in prepared.answered:
        array = result.output(name)
        if shared is not None and name in shared:
            shared[name].write(to_raw(array))
            outputs.append(ResponseOutput(name, datatypes[name], list(array.shape), array, in_shared_memory=True))
            continue
        if classes is not None and name in classes:
            array = classify(array, classes[name], signature.batched)
            outputs.append(ResponseOutput(name, "BYTES", list(array.shape), array))
            continue
        outputs.append(ResponseOutput(name, datatypes[name], list(array.shape), array))
    return InferenceResponse(model_name, version, outputs, prepared.id)


def empty_outputs(signature: Signature, answered: Sequence[str]) -> Arrays:
    """The outputs of an empty batch (a batched model's request of 0 rows), as Triton answers one: each output
    with 0 rows, its declared trailing dimensions and datatype, without running the model. An output with a free
    dimension after the batch one has no shape to give: INVALID_ARGUMENT naming it."""
    outputs: Arrays = {}
    for spec in signature.outputs:
        if spec.name not in answered:
            continue
        trailing = spec.shape[1:]
        if FREE in trailing:
            raise invalid(f"the request has 0 rows, and the model cannot say the shape of an empty output "
                          f"{spec.name!r} (declared {list(spec.shape)}, a free dimension after the batch one); "
                          f"send at least one row")
        outputs[spec.name] = np.empty((0, *trailing), dtype=spec.numpy_dtype or np.dtype(object))
    return outputs


def captured_request(model_name: str, signature: Signature, prepared: Prepared) -> InferenceRequest:
    """The request as data capture records it: its arrays, id and parameters."""
    inputs = []
    for name, array in prepared.arrays.items():
        spec = signature.input(name)
        inputs.append(RequestInput(name, spec.datatype if spec is not None else "", list(array.shape), array))
    return InferenceRequest(model_name, inputs, id=prepared.id, parameters=prepared.parameters)


def parse_version(version: str | None) -> int | None:
    if version is None or version == "":
        return None
    if not (version.isascii() and version.isdigit()) or int(version) < 1:  # "²".isdigit() is True
        # Triton's wording first: its clients (grpc_explicit_int8_content_client.py) match on it
        raise invalid(f"failed to get model version from specified version string '{version}': "
                      "the model version must be a positive integer")
    return int(version)


DEFAULT_MAX_TENSOR_ELEMENTS = 1024**3
"""Most elements per input tensor unless the server's settings say otherwise (``max_tensor_elements``)."""


def prepare_inputs(signature: Signature, inputs: Sequence[RequestInput],
                   max_elements: int = DEFAULT_MAX_TENSOR_ELEMENTS,
                   regions: Regions | None = None) -> tuple[Arrays, int | None]:
    """Check each request input against the signature and turn its data into an array.

    Returns the arrays by name and, for a batched model, the batch size all inputs agree on. An input whose
    shape holds more than ``max_elements`` elements is refused before anything is allocated for it. An input
    whose parameters name a shared memory region is read from the region (one of ``regions``).
    """
    arrays: Arrays = {}
    for item in inputs:
        name = item.name
        if name in arrays:
            raise invalid(f"input {name!r} appears more than once")
        spec = signature.input(name)
        if spec is None or item.datatype != spec.datatype or not spec.accepts_shape(item.shape):
            check_request_input(spec, name, item.datatype, item.shape, signature.input_names())  # raises
            assert spec is not None
        count = element_count(item.shape)
        if count > max_elements:
            raise invalid(f"input {name!r}: shape {list(item.shape)} has {count} elements, "
                          f"over the limit of {max_elements} per tensor (max_tensor_elements)")
        if item.parameters is not None and not item.parameters.keys().isdisjoint(_SHARED):
            arrays[name] = _shared_input(item, spec.datatype, regions)
            continue
        arrays[name] = to_array(name, spec.datatype, item.shape, item.data)
    if len(arrays) != len(signature.inputs):  # every name is known and appears once: only missing ones differ
        check_all_inputs_present(signature, arrays)
    return arrays, _batch_size(arrays) if signature.batched else None


def _batch_size(arrays: Arrays) -> int | None:
    """The batch size every input of a batched model agrees on."""
    batch_size: int | None = None
    for array in arrays.values():
        if batch_size is None:
            batch_size = array.shape[0]
        elif array.shape[0] != batch_size:
            listed = ", ".join(f"{n!r} has {a.shape[0]}" for n, a in arrays.items())
            raise invalid(f"inputs disagree on the batch size: {listed}")
    return batch_size


_SHARED = frozenset((REGION, OFFSET, BYTE_SIZE))


def _shared_input(item: RequestInput, datatype: str, regions: Regions | None) -> np.ndarray:
    """An input whose parameters place it in shared memory, read from its region."""
    assert item.parameters is not None
    location = tensor_location("input", item.name, item.parameters)
    if location is None:
        raise AssertionError("parameters of the extension without a region raise")
    if item.data is not None:
        raise invalid(f"input {item.name!r} has both data and {REGION} {location.region!r}; send one or the other")
    if regions is None:
        raise _no_regions("input", item.name, location.region)
    if datatype != "BYTES":  # the size is known: checked before anything is read
        expected = element_count(item.shape) * numpy_dtype(datatype).itemsize
        if location.byte_size != expected:
            raise invalid(f"input {item.name!r}: shape {list(item.shape)} of {datatype} needs {expected} bytes, but "
                          f"{BYTE_SIZE} is {location.byte_size} (shared memory region {location.region!r})")
    return from_raw(item.name, datatype, item.shape, regions.read(item.name, location))


def shared_outputs(outputs: Sequence[RequestOutput], regions: Regions | None) -> dict[str, SharedOutput] | None:
    """The outputs asked for in shared memory regions, each checked against its region before the model runs."""
    found: dict[str, SharedOutput] | None = None
    for output in outputs:
        parameters = output.parameters
        if not parameters or parameters.keys().isdisjoint(_SHARED):
            continue
        location = tensor_location("output", output.name, parameters)
        assert location is not None
        if parameters.get(CLASSIFICATION):  # as Triton: the classes are not written into regions
            raise invalid(f"output {output.name!r} can't set both {REGION!r} and {CLASSIFICATION!r}")
        if parameters.get("binary_data") is True:
            raise invalid(f"output {output.name!r} can't set both {REGION!r} and 'binary_data'")
        if regions is None:
            raise _no_regions("output", output.name, location.region)
        if found is None:
            found = {}
        found[output.name] = regions.output(output.name, location)
    return found


def _no_regions(kind: str, name: str, region: str) -> InferError:
    return invalid(f"{kind} {name!r} names shared memory region {region!r}, but this route takes no tensors in "
                   "shared memory (V2 inference over HTTP and gRPC does)")


def requested_outputs(signature: Signature, outputs: Sequence[RequestOutput] | None) -> Sequence[str]:
    if not outputs:
        return signature.output_name_tuple
    available = signature.output_name_tuple
    names = [o.name for o in outputs]
    unknown = [n for n in names if n not in available]
    if unknown:
        listed = ", ".join(map(repr, available))
        raise invalid(f"unknown output {', '.join(map(repr, unknown))}; the model gives {listed}")
    if len(set(names)) != len(names):  # as Triton: each output is asked for once
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise invalid(f"output {', '.join(map(repr, repeated))} is requested more than once; ask for each output once")
    return names


def scheduling_parameters(parameters: dict[str, Any] | None) -> tuple[object, int | None]:
    """The V2 reserved parameters ``priority`` and ``timeout`` (microseconds in the queue)."""
    if not parameters:
        return None, None
    timeout = parameters.get("timeout")
    if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0):
        raise invalid(f"timeout must be a non-negative integer number of microseconds, got {timeout!r}")
    return parameters.get("priority"), timeout
