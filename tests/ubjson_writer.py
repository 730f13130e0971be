"""A small UBJSON writer for tests: model documents in XGBoost's binary layout (typed arrays with counts)
without asking XGBoost to load them first."""

from __future__ import annotations

import struct
from typing import Any


def dumps(value: Any) -> bytes:
    if value is None:
        return b"Z"
    if isinstance(value, bool):
        return b"T" if value else b"F"
    if isinstance(value, int):
        return b"L" + struct.pack(">q", value)
    if isinstance(value, float):
        return b"D" + struct.pack(">d", value)
    if isinstance(value, str):
        return b"S" + _text(value)
    if isinstance(value, dict):
        return b"{" + b"".join(_text(key) + dumps(item) for key, item in value.items()) + b"}"
    if isinstance(value, list):
        return _array(value)
    raise TypeError(f"cannot write {type(value).__name__}")


def _text(text: str) -> bytes:
    raw = text.encode()
    return b"L" + struct.pack(">q", len(raw)) + raw


def _array(items: list[Any]) -> bytes:
    count = b"#L" + struct.pack(">q", len(items))
    if items and all(isinstance(x, int) and not isinstance(x, bool) for x in items):
        return b"[$L" + count + struct.pack(f">{len(items)}q", *items)
    if items and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in items):
        return b"[$D" + count + struct.pack(f">{len(items)}d", *items)
    return b"[" + count + b"".join(dumps(x) for x in items)
