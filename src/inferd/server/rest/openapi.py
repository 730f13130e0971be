"""JSON schemas of the V2 inference request and response, for the OpenAPI document (/docs, /openapi.json).

Only documentation: the hot path never validates against them (the DataPlane checks requests itself).
"""

from __future__ import annotations

from typing import Any

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
