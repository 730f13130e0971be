"""The response cache: results of models that opt in (model.toml ``[cache] enabled``), kept under one byte budget
for the server, least recently used first out, each for at most its TTL.

The key is the model version's *scope* (name, version, artifact digest and configuration: a reload with another
artifact or model.toml never serves the old results) and the request's canonical inputs: each input's name,
datatype, shape and bytes, in name order. What the request was sent as (JSON or binary, V2 or V1, REST or gRPC), its
id, and the outputs it asked for are not in it: a hit is answered by the request's own codec from the cached
arrays, with its own id. Only successful results are stored.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

ENTRY_OVERHEAD_BYTES = 256
"""What one entry costs beside its arrays (key, record, dictionary slot), counted against the budget."""


def cache_scope(name: str, version: int, sha256: str, config_json: str) -> bytes:
    """What a model version's results depend on besides the inputs."""
    return hashlib.blake2b(f"{name}\0{version}\0{sha256}\0{config_json}".encode(), digest_size=16).digest()


def cache_key(scope: bytes, arrays: Mapping[str, np.ndarray]) -> bytes:
    """The key of a request's inputs on a model version (see the module's docstring)."""
    digest = hashlib.blake2b(scope, digest_size=32)
    for name in sorted(arrays):
        array = arrays[name]
        digest.update(f"\0{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        if array.dtype == object:  # BYTES: each element length-prefixed, never the array's pointers
            for element in array.ravel():
                data = element.encode() if isinstance(element, str) else bytes(element)
                digest.update(len(data).to_bytes(8, "little"))
                digest.update(data)
        else:
            digest.update(np.ascontiguousarray(array).data)
    return digest.digest()


@dataclass(slots=True)
class _Entry:
    outputs: dict[str, np.ndarray]
    model: str
    size: int
    expires: float
    """``time.monotonic()`` past which it is not served; 0: never."""


class ResponseCache:
    """Results by key, at most ``max_bytes`` of them; thread-safe."""

    def __init__(self, max_bytes: int, default_ttl_s: float = 0.0) -> None:
        self.max_bytes = max_bytes
        self.default_ttl_s = default_ttl_s
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._bytes = 0
        self.held: dict[str, int] = {}
        """Bytes held per model name."""
        self._lock = threading.Lock()

    def get(self, key: bytes) -> dict[str, np.ndarray] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.expires and time.monotonic() > entry.expires:
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return entry.outputs

    def put(self, key: bytes, model: str, outputs: Mapping[str, np.ndarray], ttl_s: float | None = None) -> None:
        """Keep a copy of one request's outputs (the request's own rows, not the batch it ran in)."""
        copies = {name: np.array(array, copy=True) for name, array in outputs.items()}
        size = ENTRY_OVERHEAD_BYTES + sum(_nbytes(array) for array in copies.values())
        if size > self.max_bytes:
            return
        ttl = self.default_ttl_s if ttl_s is None else ttl_s
        entry = _Entry(copies, model, size, time.monotonic() + ttl if ttl else 0.0)
        with self._lock:
            if key in self._entries:
                self._drop(key)
            while self._bytes + size > self.max_bytes and self._entries:
                self._drop(next(iter(self._entries)))
            self._entries[key] = entry
            self._bytes += size
            self.held[model] = self.held.get(model, 0) + size

    def _drop(self, key: bytes) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry.size
        self.held[entry.model] -= entry.size

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)


def _nbytes(array: np.ndarray) -> int:
    if array.dtype == object:
        return array.nbytes + sum(len(element) for element in array.ravel())
    return int(array.nbytes)
