"""The Open Inference Protocol (V2) JSON form of requests and responses, and the plain
``{"input_name": [[...]]}`` mapping that the CLI and quick scripts use.

Only shapes are checked here (is ``inputs`` a list, does each input have a name, ...); whether the data fits
the model is the DataPlane's job, so every transport gets the same messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from inferd.errors import invalid
from inferd.inference import InferenceRequest, InferenceResponse, RequestInput, RequestOutput, ResponseOutput
from inferd.signature import FREE, Signature
from inferd.tensors import to_jsonable


def loads(body: bytes | str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"malformed JSON: {exc}") from None


def dumps(payload: Any) -> bytes:
    return orjson.dumps(payload)


def is_v2_request(payload: Any) -> bool:
    return isinstance(payload, dict) and isinstance(payload.get("inputs"), list)


def decode_request(payload: Any, model_name: str, model_version: str | None = None) -> InferenceRequest:
    """A V2 inference request body (already parsed JSON) as an :class:`InferenceRequest`."""
    if not isinstance(payload, dict):
        raise invalid(f"request body must be a JSON object, got {_kind(payload)}")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise invalid("request needs a non-empty 'inputs' list")
    outputs = payload.get("outputs")
    if outputs is not None and not isinstance(outputs, list):
        raise invalid(f"'outputs' must be a list, got {_kind(outputs)}")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise invalid(f"'id' must be a string, got {_kind(request_id)}")
    return InferenceRequest(
        model_name,
        [_decode_input(i, item) for i, item in enumerate(inputs)],
        model_version,
        [_decode_output(i, item) for i, item in enumerate(outputs)] if outputs else None,
        request_id,
        _parameters(payload, "request") if "parameters" in payload else None,
    )


def _decode_input(index: int, item: Any) -> RequestInput:
    # every request passes here: the checks are plain type tests, the messages are built only on failure
    if not isinstance(item, dict):
        raise invalid(f"inputs[{index}] must be an object, got {_kind(item)}")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise invalid(f"inputs[{index}] needs a 'name' string")
    datatype = item.get("datatype")
    if not isinstance(datatype, str):
        raise invalid(f"input {name!r} needs a 'datatype' string")
    shape = item.get("shape")
    if type(shape) is not list or not _all_ints(shape):
        raise invalid(f"input {name!r} needs a 'shape' list of integers, got {shape!r}")
    if "data" not in item:
        raise invalid(f"input {name!r} has no 'data'")
    parameters = item.get("parameters")
    if parameters is not None:
        parameters = _parameters(item, f"input {name!r}")
    return RequestInput(name, datatype, shape, item["data"], parameters)


def _all_ints(values: list[Any]) -> bool:
    for value in values:  # noqa: SIM110 - a loop: no generator per request
        if type(value) is not int:  # bool is not an int here
            return False
    return True


def _decode_output(index: int, item: Any) -> RequestOutput:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise invalid(f"outputs[{index}] must be an object with a 'name' string")
    if item.get("parameters") is None:
        return RequestOutput(item["name"])
    return RequestOutput(item["name"], _parameters(item, f"output {item['name']!r}"))


def _parameters(item: Mapping[str, Any], where: str) -> dict[str, Any] | None:
    parameters = item.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise invalid(f"{where}: 'parameters' must be an object, got {_kind(parameters)}")
    return dict(parameters) if parameters else None


def decode_mapping(payload: Any, model_name: str, signature: Signature,
                   model_version: str | None = None) -> InferenceRequest:
    """A plain ``{"input_name": values}`` mapping as a request: datatypes come from the signature and
    shapes from the nesting of the values. A single row for a batched input becomes a batch of one."""
    if not isinstance(payload, dict) or not payload:
        raise invalid(f"expected a V2 request or a mapping of input name to values, got {_kind(payload)}")
    inputs = []
    for name, values in payload.items():
        spec = signature.input(name)
        if spec is None:
            raise invalid(f"unexpected input {name!r}; the model takes {', '.join(map(repr, signature.input_names()))}")
        if spec.datatype == "BYTES":
            array = np.asarray(values, dtype=object)
        else:
            try:
                array = np.asarray(values)
            except ValueError as exc:
                raise invalid(f"input {name!r}: values are not a regular nested list: {exc}") from None
        if array.ndim == len(spec.shape) - 1 and spec.shape and spec.shape[0] == FREE:
            array = array[np.newaxis, ...]
        inputs.append(RequestInput(name, spec.datatype, list(array.shape), array.ravel().tolist()))
    return InferenceRequest(model_name, inputs, model_version=model_version)


def encode_response(response: InferenceResponse) -> dict[str, Any]:
    """The V2 JSON response body. Outputs carry ``parameters`` only when there is something to say."""
    body: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id is not None:
        body["id"] = response.id
    if response.parameters:
        body["parameters"] = response.parameters
    body["outputs"] = [_encode_output(o.name, o.datatype, o.shape, o.data, o.parameters) if not o.in_shared_memory
                       else _shared_output(o) for o in response.outputs]
    return body


def _shared_output(output: ResponseOutput) -> dict[str, Any]:
    """An output written into a shared memory region: its datatype and shape, no data (as Triton answers)."""
    return {"name": output.name, "datatype": output.datatype, "shape": output.shape}


def _encode_output(name: str, datatype: str, shape: list[int], data: np.ndarray,
                   parameters: dict[str, Any] | None) -> dict[str, Any]:
    try:
        values = to_jsonable(data)
    except UnicodeDecodeError:
        raise invalid(
            f"output {name!r} holds bytes that are not UTF-8 text, which JSON cannot carry; "
            "ask for it with the binary tensor extension"
        ) from None
    out: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape, "data": values}
    if parameters:
        out["parameters"] = parameters
    return out


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", type(None): "null"}
    return names.get(type(value), type(value).__name__)
