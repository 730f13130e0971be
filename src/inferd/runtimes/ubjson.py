"""A reader of Universal Binary JSON (UBJSON, draft 12), the format of XGBoost's ``model.ubj``.

Why our own: the XGBoost runtime has to look inside a ``.ubj`` file before XGBoost's native reader sees it
(that reader crashes the process on damaged input), and the Python UBJSON packages on PyPI are unmaintained.
The format is small: one marker byte per value, big-endian numbers, and optimised containers (``$`` a type
for every element, ``#`` a count) that XGBoost uses for its arrays, which become numpy arrays here.

Everything is bounded by the input: a count larger than the bytes left, or nesting deeper than
``MAX_DEPTH``, is an error (:class:`UBJSONError`, a ValueError), never a huge allocation or a deep recursion.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_DEPTH = 64
"""Containers nested deeper than this are refused (an XGBoost model nests about six deep)."""

_NUMBERS: dict[bytes, np.dtype[Any]] = {
    b"i": np.dtype(">i1"), b"U": np.dtype(">u1"), b"I": np.dtype(">i2"), b"l": np.dtype(">i4"),
    b"L": np.dtype(">i8"), b"d": np.dtype(">f4"), b"D": np.dtype(">f8"),
}
_CONSTANTS: dict[bytes, Any] = {b"Z": None, b"T": True, b"F": False}


class UBJSONError(ValueError):
    """The bytes are not one well-formed UBJSON value."""


def loads(data: bytes) -> Any:
    """The one value ``data`` holds: dicts, lists, str, int, float, bool, None, and 1-D numpy arrays for
    typed arrays of numbers."""
    reader = _Reader(memoryview(data))
    value = reader.value(reader.marker(), 0)
    if reader.pos != len(data):
        raise UBJSONError(f"{len(data) - reader.pos} bytes after the end of the value, at byte {reader.pos}")
    return value


class _Reader:
    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise UBJSONError(f"the data ends inside a value (wanted {n} bytes at byte {self.pos})")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def marker(self) -> bytes:
        while True:
            marker = bytes(self.take(1))
            if marker != b"N":  # no-op
                return marker

    def value(self, marker: bytes, depth: int) -> Any:
        if marker in _NUMBERS:
            dtype = _NUMBERS[marker]
            return np.frombuffer(self.take(dtype.itemsize), dtype)[0].item()
        if marker in _CONSTANTS:
            return _CONSTANTS[marker]
        if marker == b"C":
            return bytes(self.take(1)).decode("latin-1")
        if marker in (b"S", b"H"):
            text = self.string()
            return text if marker == b"S" else _high_precision(text)
        if marker in (b"[", b"{"):
            if depth >= MAX_DEPTH:
                raise UBJSONError(f"containers nested deeper than {MAX_DEPTH}")
            return self.array(depth + 1) if marker == b"[" else self.object(depth + 1)
        raise UBJSONError(f"unknown marker {marker!r} at byte {self.pos - 1}")

    def count(self) -> int:
        marker = self.marker()
        if marker not in _NUMBERS or marker in (b"d", b"D"):
            raise UBJSONError(f"a length must be an integer, got marker {marker!r} at byte {self.pos - 1}")
        n = int(self.value(marker, 0))
        if n < 0 or n > len(self.data) - self.pos:
            raise UBJSONError(f"length {n} at byte {self.pos} is beyond the end of the data")
        return n

    def string(self) -> str:
        raw = bytes(self.take(self.count()))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UBJSONError(f"a string before byte {self.pos} is not UTF-8: {exc}") from None

    def header(self) -> tuple[bytes | None, int | None]:
        """An optimised container's ``$type`` and ``#count``, each None when absent."""
        kind: bytes | None = None
        if bytes(self.data[self.pos:self.pos + 1]) == b"$":
            self.pos += 1
            kind = bytes(self.take(1))
            if bytes(self.data[self.pos:self.pos + 1]) != b"#":
                raise UBJSONError(f"a typed container needs a count, at byte {self.pos}")
        if bytes(self.data[self.pos:self.pos + 1]) == b"#":
            self.pos += 1
            return kind, self.count()
        return kind, None

    def array(self, depth: int) -> Any:
        kind, n = self.header()
        if kind in _NUMBERS and n is not None:
            dtype = _NUMBERS[kind]
            raw = self.take(n * dtype.itemsize)
            return np.frombuffer(raw, dtype).astype(dtype.newbyteorder("="))
        items: list[Any] = []
        if n is not None:
            for _ in range(n):
                items.append(self.value(kind or self.marker(), depth))
            return items
        while (marker := self.marker()) != b"]":
            items.append(self.value(marker, depth))
        return items

    def object(self, depth: int) -> dict[str, Any]:
        kind, n = self.header()
        result: dict[str, Any] = {}
        if n is not None:
            for _ in range(n):
                key = self.string()
                result[key] = self.value(kind or self.marker(), depth)
            return result
        while bytes(self.data[self.pos:self.pos + 1]) != b"}":
            if self.pos >= len(self.data):
                raise UBJSONError("the data ends inside an object")
            key = self.string()
            result[key] = self.value(self.marker(), depth)
        self.pos += 1
        return result


def _high_precision(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise UBJSONError(f"{text!r} is not a number") from None

