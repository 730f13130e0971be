"""The parameters of a repository load or unload request (Triton's model repository extension), read the same way
for every transport.

A load may carry:

- ``config``: a model configuration in Triton's JSON form (``{"max_batch_size": 16, "input": [...]}``) that
  overrides the model's own (its model.toml) for this load. The fields it gives replace the matching model.toml
  keys; those it leaves out keep the model.toml's values. A later load without ``config`` reads model.toml again.
- ``file:<path>`` (``file:1/model.onnx``): the files of a model folder, base64 over HTTP and bytes over gRPC. The
  model is then loaded from a temporary folder holding only these files (and ``config``, which Triton requires
  beside them), removed when the model is unloaded, reloaded or the server stops.

An unload may carry ``unload_dependents`` (inferd models have no dependents: accepted, nothing more to do).
Every problem is INVALID_ARGUMENT, and its message begins with Triton's ``failed to load '<model>'``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from inferd.config import ModelConfig, problem
from inferd.errors import InferError, invalid
from inferd.sequence_config import from_triton as sequence_from_triton

FILE_PREFIX = "file:"
_TRITON_DATATYPES = {
    "TYPE_BOOL": "BOOL", "TYPE_UINT8": "UINT8", "TYPE_UINT16": "UINT16", "TYPE_UINT32": "UINT32",
    "TYPE_UINT64": "UINT64", "TYPE_INT8": "INT8", "TYPE_INT16": "INT16", "TYPE_INT32": "INT32",
    "TYPE_INT64": "INT64", "TYPE_FP16": "FP16", "TYPE_FP32": "FP32", "TYPE_FP64": "FP64", "TYPE_STRING": "BYTES",
    "TYPE_BF16": "BF16",
}
_NO_EFFECT = frozenset({
    "platform", "backend", "runtime", "optimization", "model_warmup", "parameters", "response_cache",
    "default_model_filename", "cc_model_filenames", "metric_tags", "model_operations", "model_repository_agents",
})
"""Fields of Triton's model configuration that say nothing inferd acts on: accepted and left alone."""
_NOT_SUPPORTED = frozenset({"ensemble_scheduling", "batch_input", "batch_output"})
_APPLIED = frozenset({"max_batch_size", "input", "output", "dynamic_batching", "instance_group", "version_policy",
                      "model_transaction_policy", "sequence_batching"})
_SAFE_PART = re.compile(r"^[^/\\\x00]+$")


@dataclass(frozen=True, slots=True)
class LoadParameters:
    config: dict[str, Any] | None = None
    """The ``config`` parameter, parsed: Triton's model configuration JSON."""
    files: dict[str, bytes] = field(default_factory=dict)
    """The ``file:`` parameters: path inside the model folder (checked: relative, no ``..``) to content."""


def failed(name: str, why: str) -> InferError:
    """INVALID_ARGUMENT in Triton's words (its model-control clients look for "failed to load")."""
    return invalid(f"failed to load '{name}': {why}")


def parse_load_parameters(name: str, parameters: Mapping[str, Any] | None) -> LoadParameters | None:
    """A load request's parameters (None when it has none). ``config`` is JSON text; a ``file:`` value is
    base64 text (HTTP) or bytes (gRPC)."""
    if not parameters:
        return None
    config: dict[str, Any] | None = None
    files: dict[str, bytes] = {}
    for key, value in parameters.items():
        if key == "config":
            config = _config_json(name, value)
        elif key.startswith(FILE_PREFIX):
            files[_file_path(name, key)] = _file_content(name, key, value)
        else:
            raise failed(name, f"unknown load parameter {key!r}; a load takes 'config' and 'file:<version>/<name>'")
    if files and config is None:
        raise failed(name, "'file:' parameters need a 'config' parameter beside them, the model's configuration")
    return LoadParameters(config, files)


def check_unload_parameters(name: str, parameters: Mapping[str, Any] | None) -> None:
    """An unload takes ``unload_dependents`` (a boolean; inferd models have no dependents) and nothing else."""
    for key, value in (parameters or {}).items():
        if key != "unload_dependents":
            raise invalid(f"failed to unload '{name}': unknown unload parameter {key!r}; an unload takes "
                          "'unload_dependents'")
        if not isinstance(value, bool):
            raise invalid(f"failed to unload '{name}': unload_dependents must be true or false, got {value!r}")


def _config_json(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, str):
        raise failed(name, f"load parameter 'config' must be a string of JSON, got {type(value).__name__}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise failed(name, f"load parameter 'config' is not valid JSON: {exc}") from None
    except RecursionError:
        raise failed(name, "load parameter 'config' is nested too deeply") from None
    if not isinstance(parsed, dict):
        raise failed(name, "load parameter 'config' must be a JSON object (a model configuration)")
    return parsed


def _file_path(name: str, key: str) -> str:
    """The path of a ``file:`` parameter inside the model folder; refused if it could leave it."""
    path = key[len(FILE_PREFIX):]
    parts = path.split("/")
    if not path or any(not _SAFE_PART.match(part) or part in (".", "..") for part in parts):
        raise failed(name, f"load parameter {key!r}: a file path must be relative, inside the model folder "
                           "(like file:1/model.onnx): no '..', '.', empty part, backslash or leading '/'")
    return path


def _file_content(name: str, key: str, value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise failed(name, f"load parameter {key!r} must be the file's content in base64")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise failed(name, f"load parameter {key!r} is not valid base64") from None


# -- Triton's model configuration as model.toml keys --------------------------------------------------------
def apply_config(name: str, base: ModelConfig, triton: Mapping[str, Any]) -> ModelConfig:
    """``base`` (the model's model.toml) with what Triton's configuration ``triton`` says in its place."""
    where = "load parameter 'config'"
    merged = base.model_dump()
    given = _checked_fields(name, triton)
    if "max_batch_size" in given:
        merged["max_batch_size"] = _int(name, "max_batch_size", given["max_batch_size"])
    batched = merged["max_batch_size"] is None or merged["max_batch_size"] > 0
    for triton_key, key in (("input", "inputs"), ("output", "outputs")):
        if triton_key in given:
            merged[key] = [_tensor(name, triton_key, t, batched) for t in _list(name, triton_key, given[triton_key])]
    if "dynamic_batching" in given:
        _dynamic_batching(name, given["dynamic_batching"], merged)
    if "sequence_batching" in given:  # a stateful model (see inferd.sequence_config)
        try:
            merged["sequence_batching"] = sequence_from_triton(given["sequence_batching"])
        except ValueError as exc:
            raise failed(name, f"{where}: sequence_batching: {exc}") from None
    if "instance_group" in given:
        merged["instances"]["count"] = _instance_count(name, given["instance_group"])
    if "version_policy" in given:
        merged["versions"] = _version_policy(name, given["version_policy"])
    try:
        return ModelConfig.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {problem(e)}" for e in exc.errors())
        raise failed(name, f"{where}: {problems}") from None


def _checked_fields(name: str, triton: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of Triton's configuration that inferd acts on, once it is sure it can honour all of them."""
    where = "load parameter 'config'"
    given = dict(triton)
    if "name" in given and given.pop("name") != name:
        raise failed(name, f"{where}: its name {triton['name']!r} is not the model's name")
    unknown = sorted(set(given) - _NO_EFFECT - _NOT_SUPPORTED - _APPLIED)
    if unknown:
        raise failed(name, f"{where}: unknown field {', '.join(map(repr, unknown))} of a model configuration")
    unsupported = sorted(set(given) & _NOT_SUPPORTED)
    if unsupported:
        raise failed(name, f"{where}: inferd does not support {', '.join(unsupported)}")
    if _object(name, "model_transaction_policy", given.get("model_transaction_policy") or {}).get("decoupled"):
        raise failed(name, f"{where}: inferd does not serve decoupled models")
    return given


def _int(name: str, key: str, value: Any) -> int:
    """An integer as protobuf's JSON writes it: a number, or a string of digits (int64 fields)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    raise failed(name, f"load parameter 'config': {key} must be an integer, got {value!r}")


def _list(name: str, key: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise failed(name, f"load parameter 'config': {key} must be a list")
    return value


def _object(name: str, key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise failed(name, f"load parameter 'config': {key} must be an object")
    return value


def _tensor(name: str, kind: str, value: Any, batched: bool) -> dict[str, Any]:
    """One Triton ``input``/``output`` as a model.toml tensor: dims (or the reshape the model takes) with the batch
    dimension in front when the model batches."""
    tensor = _object(name, kind, value)
    label = f"{kind} {tensor.get('name')!r}"
    given_type = tensor.get("data_type")
    datatype = _TRITON_DATATYPES.get(given_type) if isinstance(given_type, str) else None
    if datatype is None:
        raise failed(name, f"load parameter 'config': {label}: data_type must be one of "
                           f"{', '.join(_TRITON_DATATYPES)}, got {tensor.get('data_type')!r}")
    for flag in ("is_shape_tensor", "allow_ragged_batch", "optional"):
        if tensor.get(flag):
            raise failed(name, f"load parameter 'config': {label}: inferd does not support {flag}")
    reshape = tensor.get("reshape")
    dims = _object(name, f"{label} reshape", reshape).get("shape", []) if reshape is not None \
        else tensor.get("dims", [])
    shape = [_int(name, f"{label} dims", d) for d in _list(name, f"{label} dims", dims)]
    found: dict[str, Any] = {"name": tensor.get("name"), "datatype": datatype,
                             "shape": [-1, *shape] if batched else shape}
    if kind == "input" and "format" in tensor:
        found["format"] = tensor["format"]
    return found


def _dynamic_batching(name: str, value: Any, merged: dict[str, Any]) -> None:
    batching = _object(name, "dynamic_batching", value)
    merged["batching"]["enabled"] = True
    if "max_queue_delay_microseconds" in batching:
        merged["batching"]["max_queue_delay_us"] = _int(name, "max_queue_delay_microseconds",
                                                        batching["max_queue_delay_microseconds"])
    if "preferred_batch_size" in batching:
        merged["batching"]["preferred_batch_sizes"] = [
            _int(name, "preferred_batch_size", v) for v in _list(name, "preferred_batch_size",
                                                                 batching["preferred_batch_size"])]
    if "priority_levels" in batching:
        merged["queue"]["priority_levels"] = _int(name, "priority_levels", batching["priority_levels"])
    if "default_priority_level" in batching:
        merged["queue"]["default_priority"] = _int(name, "default_priority_level",
                                                   batching["default_priority_level"])


def _instance_count(name: str, value: Any) -> int:
    count = 0
    for group in _list(name, "instance_group", value):
        group = _object(name, "instance_group", group)
        if group.get("kind", "KIND_CPU") not in ("KIND_CPU", "KIND_AUTO"):
            raise failed(name, f"load parameter 'config': instance_group kind {group['kind']!r}: inferd runs "
                               "models on the CPU (KIND_CPU)")
        count += _int(name, "instance_group count", group.get("count", 1))
    return count or 1


def _version_policy(name: str, value: Any) -> dict[str, Any]:
    policy = _object(name, "version_policy", value)
    if "all" in policy:
        return {"policy": "all"}
    if "specific" in policy:
        versions = _object(name, "version_policy specific", policy["specific"]).get("versions", [])
        return {"policy": "specific", "specific": [_int(name, "versions", v) for v in _list(name, "versions",
                                                                                           versions)]}
    latest = _object(name, "version_policy latest", policy.get("latest", {}))
    return {"policy": "latest", "latest": _int(name, "num_versions", latest.get("num_versions", 1))}
