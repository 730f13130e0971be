"""The binary tensor data extension of the Open Inference Protocol's REST API (what ``tritonclient.http``
sends by default).

A body is a JSON header followed by raw tensor bytes. The HTTP header ``Inference-Header-Content-Length``
gives the JSON header's length; without it the whole body is JSON.

Requests: an input whose ``parameters`` hold ``binary_data_size: N`` has no ``data``; its N bytes follow
the JSON header, in the order such inputs appear in ``inputs``, and the sizes must account for every byte
after the header. Raw data is little-endian and row-major, BOOL is one byte per element and each BYTES
element is a 4-byte little-endian length followed by its bytes (see :func:`inferd.tensors.from_raw`).
FP16 and BF16 have no JSON form, so such an input must come as binary data.

Responses: an output goes binary when it was requested with ``parameters.binary_data: true``; a requested
output without that parameter follows the request's ``parameters.binary_data_output``, which also covers
every output when the request lists none. FP16 and BF16 outputs always go binary, and so does a BYTES
output that is not UTF-8 text (JSON could not carry it). A binary output has ``parameters.binary_data_size``
and no ``data``; its bytes follow the JSON header in the order of ``outputs``. Such a response is
``application/octet-stream`` with ``Inference-Header-Content-Length``; a response with no binary output is
the plain V2 JSON body, ``application/json`` without that header.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from inferd.codecs import v2_json
from inferd.errors import InferError, invalid
from inferd.inference import InferenceRequest, InferenceResponse, RequestInput, ResponseOutput
from inferd.shared_memory import REGION
from inferd.tensors import from_raw, to_jsonable, to_raw

HEADER_LENGTH = "inference-header-content-length"
"""The HTTP header (lower case, as ASGI servers present it) holding the JSON header's length in bytes."""
CONTENT_TYPE_BINARY = "application/octet-stream"
CONTENT_TYPE_JSON = "application/json"

BINARY_DATA_SIZE = "binary_data_size"
BINARY_DATA = "binary_data"
BINARY_DATA_OUTPUT = "binary_data_output"
NO_JSON_FORM = frozenset({"FP16", "BF16"})
"""Datatypes that only travel as binary data."""


# -- requests ----------------------------------------------------------------------------------------
def parse_header_length(value: str | int | None) -> int | None:
    """The ``Inference-Header-Content-Length`` value as an int, None when absent; INVALID_ARGUMENT when it
    is not a non-negative integer."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():
            return int(text)
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise invalid(f"Inference-Header-Content-Length must be a non-negative integer, got {value!r}")


def decode_request(body: bytes, header_length: str | int | None, model_name: str,
                   model_version: str | None = None) -> InferenceRequest:
    """A request body, JSON header plus binary tensor data, as an :class:`InferenceRequest`.

    ``header_length`` is the ``Inference-Header-Content-Length`` HTTP header (None: the body is all JSON).
    Binary inputs get an ndarray as ``data`` (read-only, a view of ``body``); the others keep their JSON
    form. Every malformed body raises INVALID_ARGUMENT.
    """
    return decode_payload(*split_body(body, header_length), model_name, model_version)


def split_body(body: bytes, header_length: str | int | None) -> tuple[Any, memoryview | None]:
    """The parsed JSON header of a request body and the binary data after it (None when the body is all JSON).
    INVALID_ARGUMENT when the header length or the JSON is malformed."""
    length = None if header_length is None else parse_header_length(header_length)
    if length is None or length == len(body):
        return v2_json.loads(body), None
    if length > len(body):
        raise invalid(f"Inference-Header-Content-Length is {length} but the body has only {len(body)} bytes")
    return v2_json.loads(body[:length]), memoryview(body)[length:]


def decode_payload(payload: Any, tail: memoryview | None, model_name: str,
                   model_version: str | None = None) -> InferenceRequest:
    """:func:`decode_request` for a JSON header already parsed; ``tail`` is the binary data after it (None for
    a body that is all JSON)."""
    binary = _mark_binary_inputs(payload)
    request = v2_json.decode_request(payload, model_name, model_version)
    if request.parameters or request.outputs:
        _check_binary_parameters(request)
    if binary or tail is not None:
        _attach_binary_data(request.inputs, binary, tail if tail is not None else memoryview(b""))
    else:  # all JSON (the common case): what _attach_binary_data checks of JSON inputs
        for item in request.inputs:
            if item.parameters and BINARY_DATA_SIZE in item.parameters:
                raise invalid(f"input {item.name!r} has both 'data' and {BINARY_DATA_SIZE}; send one or the other")
            _check_json_input(item)
    return request


def _mark_binary_inputs(payload: Any) -> set[int] | None:
    """Give each binary input without ``data`` a placeholder, so the JSON codec accepts it; returns their
    indexes (None when there are none). An input in shared memory gets the placeholder too, unmarked (the one
    inference path reads it from its region). Anything malformed is left for the JSON codec to report."""
    inputs = payload.get("inputs") if isinstance(payload, dict) else None
    if not isinstance(inputs, list):
        return None
    marked: set[int] | None = None
    for index, item in enumerate(inputs):
        if not isinstance(item, dict) or "data" in item:
            continue
        parameters = item.get("parameters")
        if _binary_size_given(parameters):
            item["data"] = None
            if marked is None:
                marked = set()
            marked.add(index)
        elif isinstance(parameters, dict) and REGION in parameters:
            item["data"] = None
    return marked


def _binary_size_given(parameters: Any) -> bool:
    return isinstance(parameters, dict) and BINARY_DATA_SIZE in parameters


def _attach_binary_data(inputs: list[RequestInput], marked: set[int] | None, tail: memoryview) -> None:
    """Replace the placeholders with arrays read from ``tail``, in order; the sizes must use it all."""
    offset = 0
    for index, item in enumerate(inputs):
        if not _binary_size_given(item.parameters):
            _check_json_input(item)
            continue
        if marked is None or index not in marked:
            raise invalid(f"input {item.name!r} has both 'data' and {BINARY_DATA_SIZE}; send one or the other")
        size = _binary_size(item)
        if offset + size > len(tail):
            raise invalid(
                f"input {item.name!r} needs {size} bytes of binary data but only {len(tail) - offset} remain"
            )
        item.data = from_raw(item.name, item.datatype, item.shape, tail[offset:offset + size])
        offset += size
    if offset != len(tail):
        raise invalid(
            f"{len(tail) - offset} bytes of binary data after the JSON header are unaccounted for: the inputs' "
            f"{BINARY_DATA_SIZE} values add up to {offset} but {len(tail)} bytes follow the header"
        )


def _binary_size(item: RequestInput) -> int:
    size = (item.parameters or {})[BINARY_DATA_SIZE]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise invalid(f"input {item.name!r}: {BINARY_DATA_SIZE} must be a non-negative integer, got {size!r}")
    return size


def _check_json_input(item: RequestInput) -> None:
    if item.datatype in NO_JSON_FORM and not (item.parameters and REGION in item.parameters):
        raise invalid(f"{item.datatype} input {item.name!r} must be sent as binary data")


def _check_binary_parameters(request: InferenceRequest) -> None:
    """Reject non-boolean ``binary_data_output`` / ``binary_data`` before the model runs."""
    if request.parameters and not _is_flag(request.parameters.get(BINARY_DATA_OUTPUT)):
        _refuse_flag(f"request parameter {BINARY_DATA_OUTPUT!r}", request.parameters[BINARY_DATA_OUTPUT])
    for output in request.outputs or ():
        if output.parameters and not _is_flag(output.parameters.get(BINARY_DATA)):
            _refuse_flag(f"output {output.name!r}: {BINARY_DATA!r}", output.parameters[BINARY_DATA])


def _is_flag(value: Any) -> bool:
    return value is None or isinstance(value, bool)


def _refuse_flag(where: str, value: Any) -> None:
    raise invalid(f"{where} must be true or false, got {value!r}")


# -- responses ---------------------------------------------------------------------------------------
def binary_outputs(request: InferenceRequest, output_names: Iterable[str]) -> set[str]:
    """The outputs among ``output_names`` that the request asked for as binary data.

    A requested output's own ``binary_data`` wins; otherwise the request's ``binary_data_output`` decides
    (for every output when the request lists none). FP16/BF16 and non-UTF-8 BYTES outputs are forced
    binary by :func:`encode_response`, whatever this returns.
    """
    if not request.parameters and not any(o.parameters for o in request.outputs or ()):
        return set()  # plain JSON: the common case, decided without building anything
    default = (request.parameters or {}).get(BINARY_DATA_OUTPUT) is True
    explicit = {
        o.name: o.parameters[BINARY_DATA] is True
        for o in request.outputs or ()
        if o.parameters and BINARY_DATA in o.parameters
    }
    return {name for name in output_names if explicit.get(name, default)}


def encode_response(response: InferenceResponse, binary: set[str]) -> tuple[bytes, int | None]:
    """The response body and the JSON header's length, which is None when no output went binary (then the
    body is exactly the V2 JSON body). ``binary`` names the outputs to send as binary data, usually from
    :func:`binary_outputs`; FP16/BF16 and non-UTF-8 BYTES outputs go binary regardless."""
    chosen = {o.name for o in response.outputs
              if (o.name in binary or o.datatype in NO_JSON_FORM) and not o.in_shared_memory}
    if not chosen:
        try:
            return v2_json.dumps(v2_json.encode_response(response)), None
        except InferError:
            pass  # a BYTES output is not UTF-8: find which below and send it binary
    chosen |= {o.name for o in response.outputs if o.name not in chosen and not _json_safe(o)}
    return _encode_mixed(response, chosen)


def _json_safe(output: ResponseOutput) -> bool:
    if output.data.dtype != object or output.in_shared_memory:
        return True
    try:
        to_jsonable(output.data)
    except UnicodeDecodeError:
        return False
    return True


def _encode_mixed(response: InferenceResponse, chosen: set[str]) -> tuple[bytes, int]:
    """JSON outputs as the JSON codec writes them, binary ones as a size plus bytes after the header."""
    as_json = [o for o in response.outputs if o.name not in chosen]
    header = v2_json.encode_response(InferenceResponse(response.model_name, response.model_version, as_json,
                                                       response.id, response.parameters))
    json_entries = iter(header["outputs"])
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for output in response.outputs:
        if output.name not in chosen:
            entries.append(next(json_entries))
            continue
        raw = to_raw(output.data)
        chunks.append(raw)
        entries.append(_binary_entry(output, len(raw)))
    header["outputs"] = entries
    head = v2_json.dumps(header)
    return b"".join([head, *chunks]), len(head)


def _binary_entry(output: ResponseOutput, size: int) -> dict[str, Any]:
    return {
        "name": output.name,
        "datatype": output.datatype,
        "shape": output.shape,
        "parameters": {**(output.parameters or {}), BINARY_DATA_SIZE: size},
    }


def response_headers(header_length: int | None) -> dict[str, str]:
    """The HTTP headers that go with a body from :func:`encode_response`."""
    if header_length is None:
        return {"content-type": CONTENT_TYPE_JSON}
    return {"content-type": CONTENT_TYPE_BINARY, HEADER_LENGTH: str(header_length)}
