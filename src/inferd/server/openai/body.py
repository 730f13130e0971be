"""Reading an OpenAI request body: one JSON object, size-limited, each field checked with a 400 naming it.

The route modules of this package (embeddings, chat completions, completions) read their bodies with
:func:`read_object` and their fields with the ``field_*`` helpers, so that every refusal has the same shape and
names the field (``param``) and what it should be.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from inferd.server.openai.errors import invalid_request, unsupported
from inferd.server.rest.body import BodyLimit, read_body

JSONObject = dict[str, Any]


async def read_object(request: Request, max_body_bytes: int) -> JSONObject:
    """The request body as a JSON object (at most ``max_body_bytes``, else 413)."""
    raw = await read_body(request, BodyLimit(max_body_bytes, "max_body_bytes"))
    return parse_object(raw)


def parse_object(raw: bytes) -> JSONObject:
    """A JSON object from bytes; 400 for an empty body, invalid UTF-8, invalid JSON or another JSON value."""
    if not raw.strip():
        raise invalid_request("the request body is empty: send a JSON object")
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid_request(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise invalid_request(f"the request body must be a JSON object, not {json_type(payload)}")
    return payload


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def field_str(body: JSONObject, name: str, *, required: bool = False, choices: tuple[str, ...] = ()) -> str | None:
    """A string field (None when absent or null, unless ``required``); ``choices`` limits its values."""
    value = body.get(name)
    if value is None:
        if required:
            raise invalid_request(f"{name!r} is required", name, "missing_required_parameter")
        return None
    if not isinstance(value, str):
        raise invalid_request(f"{name!r} must be a string, not {json_type(value)}", name)
    if choices and value not in choices:
        listed = ", ".join(map(repr, choices))
        raise invalid_request(f"{name!r} must be one of {listed}, not {value!r}", name)
    return value


def field_int(body: JSONObject, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int | None:
    """An integer field (None when absent or null) within ``[minimum, maximum]``."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid_request(f"{name!r} must be an integer, not {json_type(value)}", name)
    if minimum is not None and value < minimum:
        raise invalid_request(f"{name!r} must be at least {minimum}, got {value}", name)
    if maximum is not None and value > maximum:
        raise invalid_request(f"{name!r} must be at most {maximum}, got {value}", name)
    return value


def field_float(body: JSONObject, name: str, *, minimum: float | None = None,
                maximum: float | None = None) -> float | None:
    """A number field (None when absent or null) within ``[minimum, maximum]``."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise invalid_request(f"{name!r} must be a number, not {json_type(value)}", name)
    if minimum is not None and value < minimum:
        raise invalid_request(f"{name!r} must be at least {minimum}, got {value}", name)
    if maximum is not None and value > maximum:
        raise invalid_request(f"{name!r} must be at most {maximum}, got {value}", name)
    return float(value)


def field_bool(body: JSONObject, name: str) -> bool | None:
    """A boolean field (None when absent or null)."""
    value = body.get(name)
    if value is None or isinstance(value, bool):
        return value
    raise invalid_request(f"{name!r} must be a boolean, not {json_type(value)}", name)


def refuse_present(body: JSONObject, names: tuple[str, ...], detail: str = "") -> None:
    """400 naming the first of ``names`` the body sets to something other than null (fields not implemented)."""
    for name in names:
        if body.get(name) is not None:
            raise unsupported(name, detail)
