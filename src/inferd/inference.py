"""Requests and responses as the DataPlane sees them, independent of any wire format.

Plain slotted dataclasses: they are built on every request, so no validation framework runs here. Input
``data`` is either an ndarray (binary transports) or the JSON form (a flat or nested list); the DataPlane
turns it into an array of the declared shape and checks it against the model's signature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from inferd.signature import TensorSpec

if TYPE_CHECKING:
    from inferd.sequence_config import SequenceBatchingConfig


@dataclass(slots=True)
class RequestInput:
    name: str
    datatype: str
    shape: list[int]
    data: Any
    parameters: dict[str, Any] | None = None


@dataclass(slots=True)
class RequestOutput:
    name: str
    parameters: dict[str, Any] | None = None


@dataclass(slots=True)
class InferenceRequest:
    model_name: str
    inputs: list[RequestInput]
    model_version: str | None = None
    outputs: list[RequestOutput] | None = None
    """Outputs the caller wants; None means every output of the model."""
    id: str | None = None
    parameters: dict[str, Any] | None = None


@dataclass(slots=True)
class ResponseOutput:
    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray
    parameters: dict[str, Any] | None = None
    in_shared_memory: bool = False
    """Written into the shared memory region the request named: the response carries no data for it (``data``
    still holds the array)."""


@dataclass(slots=True)
class InferenceResponse:
    model_name: str
    model_version: str
    outputs: list[ResponseOutput]
    id: str | None = None
    parameters: dict[str, Any] | None = None


@dataclass(slots=True)
class ModelMetadata:
    name: str
    versions: list[str]
    platform: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    parameters: dict[str, Any] | None = None
    """Extra facts about the version (``sha256`` of its artifact), in MLServer's ``parameters`` form."""


@dataclass(frozen=True, slots=True)
class ConfigTensor:
    """One tensor of a model configuration, Triton style."""

    name: str
    datatype: str
    dims: tuple[int, ...]
    """The shape without the batch dimension when the model batches (``max_batch_size`` > 0)."""
    reshape: tuple[int, ...] | None = None
    """The shape the model takes instead of ``dims`` (without the batch dimension), if it differs."""
    format: str = "FORMAT_NONE"
    """An input's layout as Triton names it (``FORMAT_NHWC``, ``FORMAT_NCHW``), from model.toml."""

    @classmethod
    def of(cls, spec: TensorSpec, batched: bool, format: str = "FORMAT_NONE") -> ConfigTensor:
        """``spec`` as a model configuration states it. A batched model's input of one value per row (shape
        ``[-1]``) is ``dims: [1]`` reshaped to ``[]``, as Triton states it: its clients (perf_analyzer) cannot
        build a tensor from empty dims, and the server accepts that ``[n, 1]`` form (see ``TensorSpec.column``)."""
        if not batched:
            return cls(spec.name, spec.datatype, spec.shape, format=format)
        if spec.column:
            return cls(spec.name, spec.datatype, (1,), (), format)
        return cls(spec.name, spec.datatype, spec.shape[1:], format=format)


@dataclass(slots=True)
class ModelConfiguration:
    """A model's configuration, Triton style: with ``max_batch_size`` > 0 the tensors' dims omit the batch."""

    name: str
    platform: str
    max_batch_size: int
    inputs: list[ConfigTensor]
    outputs: list[ConfigTensor]
    description: str = ""
    dynamic_batching: DynamicBatching | None = None
    """Set when the scheduler stacks concurrent requests (Triton's ``dynamic_batching`` section)."""
    sequence_batching: SequenceBatchingConfig | None = None
    """Set for a stateful model (Triton's ``sequence_batching`` section; never with ``dynamic_batching``)."""
    decoupled: bool = False
    """Triton's ``model_transaction_policy.decoupled``: the model may send any number of responses per request."""


@dataclass(frozen=True, slots=True)
class DynamicBatching:
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int
    priority_levels: int
    default_priority: int


@dataclass(slots=True)
class ServerMetadata:
    name: str
    version: str
    extensions: list[str] = field(default_factory=list)


@dataclass(slots=True)
class IndexEntry:
    """One row of the repository index: a model version (or a model that failed before versions)."""

    name: str
    version: str
    state: str
    reason: str = ""
