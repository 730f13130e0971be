"""What ``inferd bench`` sends: one request, built once, in the wire form of the route under test.

The tensors come from a data file (the first ``batch`` rows, columns bound to inputs as ``inferd batch run``
binds them) or are generated from the model's metadata (random numbers, small integers, short texts for BYTES).
Every request of a run is the same bytes, so the load generator spends its time sending, not encoding.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROUTES = ("json", "binary", "grpc", "generate", "openai")
JSON_HEADERS = (("content-type", "application/json"),)
WORDS = ("free", "prize", "meeting", "tomorrow", "call", "now", "winner", "lunch", "report", "claim")


class BenchError(ValueError):
    """A target, model, option or data file that bench cannot work with; the message says why."""


@dataclass(frozen=True)
class Payload:
    """One request of a run: ``path`` and ``headers`` and ``body`` for HTTP, ``body`` a serialized
    ``ModelInferRequest`` for gRPC. ``rows`` is how many inferences one request counts for."""

    route: str
    path: str
    body: bytes
    headers: tuple[tuple[str, str], ...]
    rows: int


def build_payload(model: str, metadata: Mapping[str, Any], route: str, batch: int,  # noqa: PLR0913, PLR0917
                  data: Path | None = None, prompt: str = "Say hello.", max_tokens: int = 16,
                  ignore: Sequence[str] = ()) -> Payload:
    """The request for ``route`` (one of :data:`ROUTES`) to ``model`` described by its V2 ``metadata``."""
    if route not in ROUTES:
        raise BenchError(f"unknown route {route!r}: one of {', '.join(ROUTES)}")
    if route == "generate":
        body: dict[str, Any] = {"text_input": prompt, "parameters": {"max_tokens": max_tokens, "temperature": 0}}
        return Payload(route, f"/v2/models/{model}/generate", _json(body), JSON_HEADERS, 1)
    if route == "openai":
        chat: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}],
                                "max_tokens": max_tokens, "temperature": 0}
        return Payload(route, "/openai/v1/chat/completions", _json(chat), JSON_HEADERS, 1)
    specs = list(metadata.get("inputs") or [])
    if not specs:
        raise BenchError(f"model {model!r} states no inputs in its metadata: give --route generate or openai "
                         "for a generative model")
    tensors = tensors_from_data(specs, data, batch, ignore) if data else generated_tensors(specs, batch)
    if route == "json":
        return _json_payload(model, tensors, batch)
    if route == "binary":
        return _binary_payload(model, tensors, batch)
    return _grpc_payload(model, tensors, batch)


def _json(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _shape(spec: Mapping[str, Any], batch: int) -> list[int]:
    shape = [int(d) for d in spec.get("shape", [])]
    return [batch if i == 0 and d == -1 else (1 if d == -1 else d) for i, d in enumerate(shape)]


def generated_tensors(specs: Sequence[Mapping[str, Any]], batch: int, seed: int = 0) -> list[tuple[dict[str, Any],
                                                                                                    np.ndarray]]:
    """Tensors filling each input's shape (free dimensions: ``batch`` first, 1 after)."""
    rng = np.random.default_rng(seed)
    found = []
    for spec in specs:
        shape, datatype = _shape(spec, batch), str(spec["datatype"])
        count = int(np.prod(shape)) if shape else 1
        if datatype == "BYTES":
            values = np.array([" ".join(rng.choice(WORDS, 6)) for _ in range(count)], dtype=object)
        elif datatype == "BOOL":
            values = rng.integers(0, 2, count).astype(bool)
        elif datatype.startswith(("INT", "UINT")):
            values = rng.integers(0, 10, count).astype(datatype.lower())
        else:
            values = rng.normal(size=count).astype({"FP16": "float16", "FP64": "float64"}.get(datatype, "float32"))
        found.append(({**spec, "shape": shape}, values.reshape(shape)))
    return found


def tensors_from_data(specs: Sequence[Mapping[str, Any]], data: Path, batch: int,
                      ignore: Sequence[str] = ()) -> list[tuple[dict[str, Any], np.ndarray]]:
    """The first ``batch`` rows of ``data`` as the model's inputs (columns bound as ``inferd batch run`` does)."""
    from inferd.signature import Signature, TensorSpec
    from inferd.tools.optimize_data import OptimizeError, read_held_out

    try:
        # a one-value-per-row input shows as [-1, 1] in metadata: bound as [-1], one column
        signature = Signature(tuple(TensorSpec(s["name"], s["datatype"], (-1,) if list(s["shape"]) == [-1, 1]
                                               else tuple(s["shape"])) for s in specs), ())
        held = read_held_out(data, signature, None, ignore)
    except (OptimizeError, ValueError, KeyError) as exc:
        raise BenchError(str(exc)) from None
    if held.rows < batch:
        raise BenchError(f"--data {data} has {held.rows} rows, fewer than --batch {batch}")
    found = []
    for spec in specs:
        shape = _shape(spec, batch)
        values = np.asarray(held.inputs[spec["name"]][:batch])
        found.append(({**spec, "shape": shape}, values.reshape(shape)))
    return found


def _json_payload(model: str, tensors: list[tuple[dict[str, Any], np.ndarray]], batch: int) -> Payload:
    inputs = [{"name": s["name"], "datatype": s["datatype"], "shape": s["shape"],
               "data": [str(v) for v in a.ravel()] if s["datatype"] == "BYTES" else a.ravel().tolist()}
              for s, a in tensors]
    return Payload("json", f"/v2/models/{model}/infer", _json({"inputs": inputs}),
                   (("content-type", "application/json"),), batch)


def raw_bytes(datatype: str, values: np.ndarray) -> bytes:
    """A tensor's bytes in the binary extension and gRPC's raw_input_contents (BYTES: 4-byte length prefixes)."""
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + b for b in (str(v).encode() for v in values.ravel()))
    return np.ascontiguousarray(values).tobytes()


def _binary_payload(model: str, tensors: list[tuple[dict[str, Any], np.ndarray]], batch: int) -> Payload:
    raws = [raw_bytes(s["datatype"], a) for s, a in tensors]
    header = _json({"inputs": [{"name": s["name"], "datatype": s["datatype"], "shape": s["shape"],
                                "parameters": {"binary_data_size": len(raw)}}
                               for (s, _), raw in zip(tensors, raws, strict=True)],
                    "parameters": {"binary_data_output": True}})
    return Payload("binary", f"/v2/models/{model}/infer", header + b"".join(raws),
                   (("content-type", "application/octet-stream"),
                    ("inference-header-content-length", str(len(header)))), batch)


def _grpc_payload(model: str, tensors: list[tuple[dict[str, Any], np.ndarray]], batch: int) -> Payload:
    from inferd.server.grpc.generated import grpc_service_pb2 as pb

    request = pb.ModelInferRequest(model_name=model)
    for spec, values in tensors:
        request.inputs.add(name=spec["name"], datatype=spec["datatype"], shape=spec["shape"])
        request.raw_input_contents.append(raw_bytes(spec["datatype"], values))
    return Payload("grpc", "ModelInfer", request.SerializeToString(), (), batch)
