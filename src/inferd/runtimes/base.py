"""The seam between inferd and a framework: a loaded model with a signature and a predict function.

Each runtime module (``inferd.runtimes.onnx``, ...) exposes ``load(artifact: Path, options: Options, override:
Signature | None) -> Runtime``, where ``Options`` is its schema of the ``[options]`` table of model.toml, declared
in :mod:`inferd.runtimes.options`. The registry imports the module only when a model needs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict

from inferd.signature import Signature

Inputs = dict[str, np.ndarray]
Outputs = Mapping[str, np.ndarray]


@runtime_checkable
class Runtime(Protocol):
    """A model ready to predict.

    ``predict`` takes arrays already checked against ``signature`` (names, datatypes, shapes) and returns one
    array per output. It may be called from several threads at once unless the runtime says otherwise.

    A runtime may also set ``inline_safe = True`` when its cost follows the input size and it never waits on
    a lock: short calls then run on the event loop instead of a thread (see :mod:`inferd.executors.threads`).
    """

    signature: Signature

    def predict(self, inputs: Inputs) -> Outputs: ...

    def close(self) -> None: ...


class ResponseSender(Protocol):
    """Where a decoupled model's responses go, one call per response, from the thread the model runs on."""

    def send(self, outputs: Outputs) -> bool:
        """Hand one response on; False once its caller has gone away: the model should stop making more."""
        ...


@runtime_checkable
class StreamingRuntime(Protocol):
    """A runtime that can serve a decoupled model (``[model_transaction_policy] decoupled = true``): ``stream``
    sends each response of one request as the model makes it, and returns when the model has finished."""

    signature: Signature

    def stream(self, inputs: Inputs, sender: ResponseSender) -> None: ...


class NoOptions(BaseModel):
    """For runtimes that take no ``[options]``: any key is an error naming the file and line."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
