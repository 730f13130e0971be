"""JSON schemas of the V2 inference request and response, for the OpenAPI document (/docs, /openapi.json).

Only documentation: the hot path never validates against them (the DataPlane checks requests itself).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

_PARAMETERS: dict[str, Any] = {"type": "object", "additionalProperties": True}
_DATA: dict[str, Any] = {
    "description": "Tensor elements, flat or nested, row-major. Absent when sent as binary data.",
    "type": "array",
    "items": {},
}

INFER_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": _PARAMETERS,
        "inputs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "datatype", "shape"],
                "properties": {
                    "name": {"type": "string"},
                    "datatype": {"type": "string", "enum": [
                        "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                        "FP16", "FP32", "FP64", "BYTES", "BF16"]},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "parameters": _PARAMETERS,
                    "data": _DATA,
                },
            },
        },
        "outputs": {
            "type": "array",
            "items": {"type": "object", "required": ["name"],
                      "properties": {"name": {"type": "string"}, "parameters": _PARAMETERS}},
        },
    },
}

INFER_RESPONSE: dict[str, Any] = {
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "parameters": _PARAMETERS,
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "datatype", "shape"],
                "properties": {
                    "name": {"type": "string"},
                    "datatype": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer"}},
                    "parameters": _PARAMETERS,
                    "data": _DATA,
                },
            },
        },
    },
}

# Request bodies of the routes that read their body themselves (FastAPI sees no body parameter to document).
_BINARY_V2: dict[str, Any] = {
    "description": "The binary tensor extension: a JSON header of Inference-Header-Content-Length bytes, then "
                   "the tensors' raw bytes.",
    "type": "string", "format": "binary",
}
INFER_BODY: dict[str, Any] = {
    "required": True,
    "content": {"application/json": {"schema": INFER_REQUEST}, "application/octet-stream": {"schema": _BINARY_V2}},
}

ACCEPTED_RESPONSE: dict[str, Any] = {
    "description": "Stored durably; 200 with the same body for an Inference-Id seen before",
    "content": {"application/json": {"schema": {
        "type": "object", "required": ["id", "status_url", "result_url"],
        "properties": {"id": {"type": "string"}, "status_url": {"type": "string"}, "result_url": {"type": "string"}},
    }}},
}

ASYNC_HEADERS: list[dict[str, Any]] = [
    {"name": "Inference-Id", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "Idempotency key and the job's id (1-128 letters, digits, '.', '_', ':', '-'), per API key: "
                    "the same id again from the same key is the same job (200), with another request 409; "
                    "another key's jobs are its own."},
    {"name": "Inference-Id-From-Body", "in": "header", "required": False,
     "schema": {"type": "string", "enum": ["true", "false"], "default": "false"},  # read by the route: a 400
     "description": "true: the V2 `id` field of the JSON body is the job's id (bodies up to "
                    "async_inline_payload_bytes). Otherwise the body's `id` is never the job's key."},
    {"name": "Inference-Callback-Url", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "Where to POST the job's status document when it ends."},
    {"name": "Inference-Input-Location", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "Read the request body from this file or URL (under async_input_roots) instead."},
]
"""The request headers ``infer-async`` reads itself (FastAPI sees no parameter to document)."""

V1_REQUEST: dict[str, Any] = {
    "description": "Rows as `instances` (one per row: a list of features, a scalar, a string, or an object of "
                   "input name to value), or columns as `inputs` (the rows of the only input, or an object of "
                   "input name to rows); not both.",
    "type": "object",
    "properties": {
        "instances": {"type": "array", "items": {}},
        "inputs": {"anyOf": [{"type": "array", "items": {}}, {"type": "object", "additionalProperties": True}]},
        "parameters": _PARAMETERS,
    },
}
V1_BODY: dict[str, Any] = {"required": True, "content": {"application/json": {"schema": V1_REQUEST}}}
V1_RESPONSE: dict[str, Any] = {
    "description": "Predictions, one per row",
    "content": {"application/json": {"schema": {
        "type": "object", "required": ["predictions"], "properties": {"predictions": {"type": "array", "items": {}}},
    }}},
}

_TEXT_ROWS: dict[str, Any] = {"type": "string"}
INVOCATIONS_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {"schema": {
            "description": "A V2 request (answered in V2), a V1 body, a bare list of instances, or an object of "
                           "input name to values.",
            "anyOf": [INFER_REQUEST, V1_REQUEST, {"type": "array", "items": {}}],
        }},
        "text/csv": {"schema": {**_TEXT_ROWS, "description": "Rows of the model's one input, no header."}},
        "application/jsonlines": {"schema": {**_TEXT_ROWS, "description": "One instance per line."}},
        "application/x-jsonlines": {"schema": {**_TEXT_ROWS, "description": "One instance per line."}},
    },
}

REPOSITORY_INDEX_BODY: dict[str, Any] = {
    "required": False,
    "content": {"application/json": {"schema": {
        "type": "object", "properties": {"ready": {"type": "boolean", "description": "Only the ready models."}},
    }}},
}


REPOSITORY_LOAD_BODY: dict[str, Any] = {
    "required": False,
    "content": {"application/json": {"schema": {
        "type": "object", "properties": {"parameters": {
            "type": "object",
            "description": "Triton's load parameters: \"config\", a model configuration in Triton's JSON form (as "
                           "text) applied over the model's model.toml for this load; \"file:<version>/<name>\", "
                           "a file of the model folder in base64 (needs \"config\" beside it).",
            "additionalProperties": {"type": "string"},
        }},
    }}},
}

REPOSITORY_UNLOAD_BODY: dict[str, Any] = {
    "required": False,
    "content": {"application/json": {"schema": {
        "type": "object", "properties": {"parameters": {
            "type": "object", "properties": {"unload_dependents": {
                "type": "boolean", "description": "Accepted; inferd models have no dependents."}},
        }},
    }}},
}


def document_honestly(app: FastAPI) -> None:
    """Make ``app`` serve its OpenAPI document with the errors it sends: no 422 (see below)."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            validated = {(route.path_format, method.lower()) for route in app.routes
                         if isinstance(route, APIRoute) and route.body_field is not None
                         for method in route.methods or ()}
            app.openapi_schema = replace_422(build(), validated)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend its schema


INVALID_PARAMETERS: dict[str, Any] = {
    "description": "A parameter or body FastAPI could not read, in the route's error form "
                   "(`{\"error\": message}` naming the parameter)",
}


def replace_422(schema: dict[str, Any], validated: set[tuple[str, str]]) -> dict[str, Any]:
    """FastAPI documents a ``422 Validation Error`` for every route with a parameter; the app answers such
    failures with a 400 in its own error form instead (app._on_invalid_parameters). Where the route can send it (a
    body FastAPI validates: ``validated`` lists the ``(path, method)`` of those; or a parameter that is not an
    optional or path string), document that 400; drop the 422 everywhere."""
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None and (
                    (path, method) in validated or not all(map(_never_invalid, operation.get("parameters", [])))):
                responses.setdefault("400", INVALID_PARAMETERS)
    for name in ("HTTPValidationError", "ValidationError"):  # the first refers to the second
        _drop_if_unused(schema, name)
    return schema


def _drop_if_unused(schema: dict[str, Any], name: str) -> None:
    components = schema.get("components", {}).get("schemas", {})
    ref = f"#/components/schemas/{name}"
    others = {key: value for key, value in components.items() if key != name}
    if name in components and ref not in repr(schema["paths"]) and ref not in repr(others):
        del components[name]
    if not components:
        schema.get("components", {}).pop("schemas", None)
    if not schema.get("components", True):
        del schema["components"]


def _never_invalid(parameter: dict[str, Any]) -> bool:
    schema = parameter.get("schema", {})
    kinds = [s.get("type") for s in schema.get("anyOf", [schema])]
    return all(kind in ("string", "null") for kind in kinds) and (parameter["in"] == "path"
                                                                   or not parameter.get("required"))
