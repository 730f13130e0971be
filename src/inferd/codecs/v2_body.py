"""The V2 inference request as REST carries it, on the one inference path (a :class:`~inferd.calls.Call`).

A body is JSON, or a JSON header followed by binary tensor data (:mod:`inferd.codecs.v2_binary`). The plain form,
nearly every request, is read and answered by the model version's :class:`~inferd.codecs.v2_plain.PlainRequestPlan`;
any other goes through the general decoder and the general checks. Either way the answer is the response body and,
when an output goes as binary data, the length of its JSON header. The synchronous ``infer`` route and the
asynchronous jobs (which store that very body as their result) both answer through this call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inferd.calls import GeneralPrepared, Prepared, Routing, build_response, prepare_request, routing_from
from inferd.codecs.v2_binary import binary_outputs, decode_payload, encode_response, split_body
from inferd.codecs.v2_plain import PlainRequest, PlainRequestPlan
from inferd.inference import InferenceRequest
from inferd.signature import Signature

if TYPE_CHECKING:
    from inferd.loading import Loaded
    from inferd.scheduling.scheduler import RunResult
    from inferd.shared_memory import Regions

Encoded = tuple[bytes, int | None]
"""A response body and its JSON header's length (None: no output goes as binary data)."""


class V2Body:
    __slots__ = ("model_name", "model_version", "payload", "regions", "request", "routing", "tail")

    endpoint = "HTTP end point"
    """How it came, for Triton's wording of a refusal (a decoupled model: "HTTP end point doesn't support ...")."""

    def __init__(self, body: bytes, header_length: str | int | None, model_name: str,
                 model_version: str | None, regions: Regions | None = None) -> None:
        """INVALID_ARGUMENT when the JSON or the header length is malformed. ``regions``: the shared memory
        regions the caller may name (None: tensors in shared memory are refused)."""
        self.payload, self.tail = split_body(body, header_length)
        self.model_name = model_name
        self.model_version = model_version
        self.regions = regions
        self.request: InferenceRequest | None = None
        """The general decoding, for a request not in the plain form."""
        self.routing: Routing | None = None

    def route(self) -> Routing:
        """The routing the transport set, with what the body's parameters ask."""
        routing = self.routing = self.routing if self.routing is not None else Routing()
        payload = self.payload
        if routing.variant is None and routing.key is None and type(payload) is dict:
            parameters = payload.get("parameters")
            if parameters is not None:
                routing_from(parameters, routing)
        return routing

    def prepare(self, loaded: Loaded, max_elements: int) -> Prepared:
        plan = loaded.plain
        if plan is not None:
            read = plan.read(self.payload, max_elements, self.tail)
            if read is not None:
                return read
        request = self.request = decode_payload(self.payload, self.tail, self.model_name, self.model_version)
        return prepare_request(request, loaded.signature, loaded.scheduler.policy.max_batch_size, max_elements,
                               loaded.labels, self.regions)

    def respond(self, version: str, signature: Signature, prepared: Any, result: RunResult) -> Encoded:
        routing = self.routing
        if type(prepared) is PlainRequest:
            shown = routing.shown if routing is not None else None
            return PlainRequestPlan.encode(self.model_name, version, prepared, result, shown)
        assert isinstance(prepared, GeneralPrepared)
        assert self.request is not None
        response = build_response(self.model_name, version, signature, prepared, result)
        response.parameters = routing.parameters() if routing is not None and routing.endpoint is not None else None
        return encode_response(response, binary_outputs(self.request, prepared.answered))
