"""The same calls over each transport, with stock clients, so one suite can run against all of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

HTTP_CODES = {"400": "INVALID_ARGUMENT", "404": "NOT_FOUND", "500": "INTERNAL", "503": "UNAVAILABLE",
              "504": "DEADLINE_EXCEEDED", "429": "RESOURCE_EXHAUSTED"}


class CallFailedError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Transport(Protocol):
    name: str

    def infer(self, model: str, inputs: dict[str, tuple[str, np.ndarray]],
              outputs: list[str] | None = None, version: str = "") -> dict[str, np.ndarray]: ...

    def metadata(self, model: str) -> dict[str, Any]: ...

    def model_ready(self, model: str) -> bool: ...

    def server_ready(self) -> bool: ...

    def close(self) -> None: ...


@dataclass
class Rest:
    """One tritonclient.http client for the transport's life, closed explicitly: tritonclient closes a client
    again when it is garbage-collected, which gevent refuses if that happens on another thread."""

    url: str
    binary: bool
    _client: httpclient.InferenceServerClient | None = None

    @property
    def name(self) -> str:
        return "rest-binary" if self.binary else "rest-json"

    def client(self) -> httpclient.InferenceServerClient:
        if self._client is None:
            self._client = httpclient.InferenceServerClient(self.url.removeprefix("http://"))
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def infer(self, model: str, inputs: dict[str, tuple[str, np.ndarray]],
              outputs: list[str] | None = None, version: str = "") -> dict[str, np.ndarray]:
        client = self.client()
        wire = []
        for name, (datatype, array) in inputs.items():
            item = httpclient.InferInput(name, list(array.shape), datatype)
            item.set_data_from_numpy(array, binary_data=self.binary)
            wire.append(item)
        requested = [httpclient.InferRequestedOutput(n, binary_data=self.binary) for n in outputs or []] or None
        try:
            result = client.infer(model, wire, model_version=version, outputs=requested)
        except InferenceServerException as exc:
            raise CallFailedError(HTTP_CODES.get(str(exc.status()), str(exc.status())), exc.message()) from exc
        names = outputs or [o["name"] for o in result.get_response()["outputs"]]
        return {n: result.as_numpy(n) for n in names}

    def metadata(self, model: str) -> dict[str, Any]:
        client = self.client()
        try:
            found: dict[str, Any] = client.get_model_metadata(model)
            return found
        except InferenceServerException as exc:
            raise CallFailedError(HTTP_CODES.get(str(exc.status()), str(exc.status())), exc.message()) from exc

    def model_ready(self, model: str) -> bool:
        return bool(self.client().is_model_ready(model))

    def server_ready(self) -> bool:
        return bool(self.client().is_server_ready())


@dataclass
class Grpc:
    url: str
    name: str = "grpc"

    def infer(self, model: str, inputs: dict[str, tuple[str, np.ndarray]],
              outputs: list[str] | None = None, version: str = "") -> dict[str, np.ndarray]:
        wire = []
        for name, (datatype, array) in inputs.items():
            item = grpcclient.InferInput(name, list(array.shape), datatype)
            item.set_data_from_numpy(array)
            wire.append(item)
        requested = [grpcclient.InferRequestedOutput(n) for n in outputs or []] or None
        with grpcclient.InferenceServerClient(self.url) as client:
            try:
                result = client.infer(model, wire, model_version=version, outputs=requested)
            except InferenceServerException as exc:
                raise CallFailedError(str(exc.status()).removeprefix("StatusCode."), exc.message()) from exc
        names = outputs or [o.name for o in result.get_response().outputs]
        return {n: result.as_numpy(n) for n in names}

    def metadata(self, model: str) -> dict[str, Any]:
        with grpcclient.InferenceServerClient(self.url) as client:
            try:
                found: dict[str, Any] = client.get_model_metadata(model, as_json=True)
                return found
            except InferenceServerException as exc:
                raise CallFailedError(str(exc.status()).removeprefix("StatusCode."), exc.message()) from exc

    def model_ready(self, model: str) -> bool:
        with grpcclient.InferenceServerClient(self.url) as client:
            return bool(client.is_model_ready(model))

    def server_ready(self) -> bool:
        with grpcclient.InferenceServerClient(self.url) as client:
            return bool(client.is_server_ready())

    def close(self) -> None:
        pass
