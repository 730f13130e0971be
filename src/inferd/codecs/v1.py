"""The KServe V1 body (also Vertex AI's): ``{"instances": [...]}`` in, ``{"predictions": [...]}`` out.

Requests carry no datatypes or shapes: the datatypes come from the model's signature and the shapes from
the nesting of the values.

Rows (``instances``):

* A model with one input takes each instance as one row of that input: a list of features, a scalar, or a
  string for a BYTES input. Instances that are objects are read as ``{input_name: value}`` (below).
* A model with several inputs takes each instance as an object ``{input_name: value}``; every instance
  names every input.
* Instances are stacked along the batch (first) dimension: ``n`` instances of shape ``[3]`` make ``[n, 3]``.

Columns (``inputs``): a list is the rows of the model's only input; an object maps each input name to its
rows (read by :func:`inferd.codecs.v2_json.decode_mapping`).

Predictions: for a model with one output, one entry per row (that row of the output, BYTES as text); for
several outputs, one object ``{output_name: value}`` per row.

Models without a batch dimension (a signature whose first dimensions are not all ``-1``) have no rows to
stack: for a one-input model the whole ``instances`` list is the input's tensor; a several-input model
takes exactly one instance, an object of input name to the whole tensor. Their predictions are the one
output's whole tensor (a scalar is wrapped in a list), or a single object of output name to tensor.

All functions are pure: parsed JSON in, :class:`InferenceRequest` out, and back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from inferd.codecs import v2_json
from inferd.errors import InferError, invalid
from inferd.inference import InferenceRequest, InferenceResponse, RequestInput, ResponseOutput
from inferd.signature import Signature, TensorSpec
from inferd.tensors import numpy_dtype, to_jsonable

Label = Callable[[int], str]
"""Names the ``index``-th value of a list in an error message (``"instance 3"``)."""


# -- requests --------------------------------------------------------------------------------------------
def decode_request(payload: Any, model_name: str, signature: Signature,
                   model_version: str | None = None) -> InferenceRequest:
    """A V1 body, ``{"instances": [...]}`` or ``{"inputs": ...}`` with optional ``parameters``."""
    if not isinstance(payload, Mapping):
        raise invalid(f"a V1 request must be a JSON object with 'instances' or 'inputs', got {_kind(payload)}")
    if "instances" in payload and "inputs" in payload:
        raise invalid("send either 'instances' or 'inputs', not both")
    if "instances" in payload:
        request = decode_instances(payload["instances"], model_name, signature, model_version)
    elif "inputs" in payload:
        request = decode_columns(payload["inputs"], model_name, signature, model_version)
    else:
        raise invalid("a V1 request needs 'instances' (a list of rows) or 'inputs' (the columns)")
    request.parameters = _parameters(payload)
    return request


def decode_json(payload: Any, model_name: str, signature: Signature,
                model_version: str | None = None) -> InferenceRequest:
    """Any of the JSON bodies a generic ``/invocations`` call may send, except V2 (see :func:`looks_like_v2`):
    a V1 body, a bare list of instances, or a mapping of input name to values."""
    if isinstance(payload, list):
        return decode_instances(payload, model_name, signature, model_version)
    if isinstance(payload, Mapping) and ("instances" in payload or "inputs" in payload):
        return decode_request(payload, model_name, signature, model_version)
    return v2_json.decode_mapping(payload, model_name, signature, model_version)


def looks_like_v2(payload: Any) -> bool:
    """A V2 request: an ``inputs`` list of tensor objects, each with a ``name`` (V1 columns are plain rows)."""
    if not v2_json.is_v2_request(payload):
        return False
    inputs = payload["inputs"]
    return bool(inputs) and all(isinstance(item, Mapping) and "name" in item for item in inputs)


def decode_instances(instances: Any, model_name: str, signature: Signature,
                     model_version: str | None = None) -> InferenceRequest:
    """Rows, one per instance, stacked into a batch of each input."""
    if not isinstance(instances, list):
        raise invalid(f"'instances' must be a list, got {_kind(instances)}")
    if not instances:
        raise invalid("'instances' is empty: send at least one instance")
    if len(signature.inputs) == 1 and not isinstance(instances[0], Mapping):
        spec = signature.inputs[0]
        inputs = [_stacked(spec, instances, _instance_label)]
    elif signature.batched:
        inputs = _named_rows(instances, signature)
    else:
        inputs = _named_tensors(instances, signature)
    return InferenceRequest(model_name, inputs, model_version=model_version)


def decode_columns(columns: Any, model_name: str, signature: Signature,
                   model_version: str | None = None) -> InferenceRequest:
    """The columnar form: a list of the only input's rows, or an object of input name to rows."""
    if isinstance(columns, list):
        if looks_like_v2({"inputs": columns}):
            raise invalid("this is a V2 request; the V1 protocol takes 'instances' or 'inputs' as plain rows "
                          "(send V2 requests to /v2/models/{name}/infer)")
        if not columns:
            raise invalid("'inputs' is empty: send at least one row")
        if len(signature.inputs) != 1:
            raise invalid(f"'inputs' as a list holds the rows of a model's only input, but this model takes "
                          f"{_names(signature.input_names())}: send an object of input name to rows")
        columns = {signature.inputs[0].name: columns}
    if not isinstance(columns, Mapping):
        raise invalid(f"'inputs' must be a list of rows or an object of input name to rows, got {_kind(columns)}")
    return v2_json.decode_mapping(columns, model_name, signature, model_version)


def _named_rows(instances: list[Any], signature: Signature) -> list[RequestInput]:
    for index, instance in enumerate(instances):
        _check_named(instance, f"instance {index}", signature)
    return [
        _stacked(spec, [instance[spec.name] for instance in instances], _instance_label)
        for spec in signature.inputs
    ]


def _named_tensors(instances: list[Any], signature: Signature) -> list[RequestInput]:
    """A model without a batch dimension: one instance holding each input's whole tensor."""
    if len(instances) != 1:
        raise invalid(f"the model has no batch dimension: send one instance (an object of input name to its "
                      f"whole tensor), not {len(instances)}")
    instance = instances[0]
    _check_named(instance, "instance 0", signature)
    return [_stacked(spec, instance[spec.name], _row_label) for spec in signature.inputs]


def _check_named(instance: Any, where: str, signature: Signature) -> None:
    names = signature.input_names()
    if not isinstance(instance, Mapping):
        raise invalid(f"{where} must be an object of input name to value (the model takes {_names(names)}), "
                      f"got {_kind(instance)}")
    unexpected = [key for key in instance if key not in names]
    if unexpected:
        raise invalid(f"{where} has unexpected input {unexpected[0]!r}; the model takes {_names(names)}")
    missing = [name for name in names if name not in instance]
    if missing:
        raise invalid(f"{where} is missing input {missing[0]!r}")


def _stacked(spec: TensorSpec, values: Any, label: Label) -> RequestInput:
    """One input from nested values: the shape from the nesting, numbers already in the signature's dtype."""
    if spec.datatype == "BYTES":
        shape = nested_shape(values)
        if shape is None:
            raise _not_stackable(spec, values, label, None)
        return RequestInput(spec.name, spec.datatype, shape, values)
    try:
        array = np.asarray(values, dtype=numpy_dtype(spec.datatype))
    except (ValueError, TypeError, OverflowError) as exc:
        raise _not_stackable(spec, values, label, exc) from None
    return RequestInput(spec.name, spec.datatype, list(array.shape), array)


def _not_stackable(spec: TensorSpec, values: Any, label: Label, exc: Exception | None) -> InferError:
    """Say which value breaks the stacking: a ragged one, one shaped unlike the first, or a non-number."""
    where = f"input {spec.name!r}"
    if isinstance(values, list) and values:
        first = nested_shape(values[0])
        for index, value in enumerate(values):
            shape = nested_shape(value)
            if shape is None:
                return invalid(f"{where}: {label(index)} is a ragged nested list")
            if shape != first:
                return invalid(f"{where}: {label(index)} has shape {shape} but {label(0)} has {first}")
    if exc is None:
        return invalid(f"{where}: values are a ragged nested list")
    return invalid(f"{where}: values do not fit datatype {spec.datatype}: {exc}")


def nested_shape(value: Any) -> list[int] | None:
    """The shape of a nested list (``[]`` for a scalar), or None when it is ragged."""
    if not isinstance(value, list):
        return []
    if not value:
        return [0]
    inner = [nested_shape(item) for item in value]
    first = inner[0]
    if first is None or any(shape != first for shape in inner):
        return None
    return [len(value), *first]


def _instance_label(index: int) -> str:
    return f"instance {index}"


def _row_label(index: int) -> str:
    return f"row {index}"


def _parameters(payload: Mapping[str, Any]) -> dict[str, Any] | None:
    parameters = payload.get("parameters")
    if parameters is not None and not isinstance(parameters, Mapping):
        raise invalid(f"'parameters' must be an object, got {_kind(parameters)}")
    return dict(parameters) if parameters else None


# -- responses -------------------------------------------------------------------------------------------
def encode_response(response: InferenceResponse, batched: bool) -> dict[str, Any]:
    """The V1 response body, ``{"predictions": [...]}``."""
    return {"predictions": encode_predictions(response, batched)}


def encode_predictions(response: InferenceResponse, batched: bool) -> list[Any]:
    """One prediction per row: the row of the only output, or an object of output name to its row."""
    outputs = response.outputs
    if not batched:
        if len(outputs) == 1:
            whole = nested_values(outputs[0])
            return whole if isinstance(whole, list) else [whole]
        return [{output.name: nested_values(output) for output in outputs}]
    if len(outputs) == 1:
        rows: list[Any] = nested_values(outputs[0])
        return rows
    columns = {output.name: nested_values(output) for output in outputs}
    count = outputs[0].shape[0] if outputs and outputs[0].shape else 0
    return [{name: column[row] for name, column in columns.items()} for row in range(count)]


def nested_values(output: ResponseOutput) -> Any:
    """An output as nested JSON values (BYTES as UTF-8 text, FP32 values in their shortest form); a 0-d output
    is a bare scalar."""
    try:
        flat = to_jsonable(output.data, shortest=True)
    except UnicodeDecodeError:
        raise invalid(f"output {output.name!r} holds bytes that are not UTF-8 text, which JSON cannot carry; "
                      "ask for it over the V2 protocol with the binary tensor extension") from None
    shape = output.data.shape
    if not shape:
        return flat[0]
    holder = np.empty(len(flat), dtype=object)
    holder[:] = flat
    return holder.reshape(shape).tolist()


# -- JSON lines -------------------------------------------------------------------------------------------
def loads_lines(text: str) -> list[Any]:
    """One JSON value per line (blank lines skipped); errors name the line."""
    values = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values.append(v2_json.loads(line))
        except InferError as exc:
            raise invalid(f"JSON lines: line {number}: {exc.message}") from None
    if not values:
        raise invalid("the JSON lines body has no lines")
    return values


def dumps_lines(values: Sequence[Any]) -> bytes:
    """One JSON value per line, each line ending in a newline."""
    return b"".join(orjson.dumps(value) + b"\n" for value in values)


def _names(names: Sequence[str]) -> str:
    return ", ".join(repr(name) for name in names) or "nothing"


def _kind(value: Any) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)
