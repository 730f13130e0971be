"""The ``[sequence_batching]`` table of model.toml: a stateful model, whose requests come in sequences.

.. code-block:: toml

    [sequence_batching]
    strategy = "oldest"                       # direct (default) | oldest
    max_sequence_idle_microseconds = 1000000  # a sequence without a request for so long is released
    max_candidate_sequences = 64              # live sequences at once (default: direct max_batch_size x count)
    max_queue_delay_microseconds = 0          # how long a batch of sequences' requests may wait to fill
    preferred_batch_sizes = [4, 8]            # oldest: batch sizes run at once

    [[sequence_batching.control_input]]       # tensors inferd gives the model with every request
    name = "START"
    kind = "CONTROL_SEQUENCE_START"           # START | READY | END | CORRID (Triton's names)
    int32_false_true = [0, 1]                 # or fp32_false_true, or bool_false_true

    [[sequence_batching.control_input]]
    name = "CORRID"
    kind = "CONTROL_SEQUENCE_CORRID"
    datatype = "UINT64"                       # UINT64 | INT64 | UINT32 | INT32 | BYTES

    [[sequence_batching.state]]               # implicit state: an output fed back as an input
    input_name = "STATE_IN"
    output_name = "STATE_OUT"
    datatype = "FP32"
    shape = [4]                               # without the batch dimension; zeros at the start

See docs/sequences.md.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from inferd.tensors import DATATYPES

ControlKind = Literal["CONTROL_SEQUENCE_START", "CONTROL_SEQUENCE_READY", "CONTROL_SEQUENCE_END",
                      "CONTROL_SEQUENCE_CORRID"]

CORRID_DATATYPES = ("UINT64", "INT64", "UINT32", "INT32", "BYTES")
"""What a CORRID control may be: Triton's TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32 or TYPE_STRING."""

DEFAULT_IDLE_US = 1_000_000
"""Triton's default ``max_sequence_idle_microseconds``: one second."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ControlInputConfig(_Strict):
    """One ``[[sequence_batching.control_input]]``: an input of the model that inferd fills in for each request
    (clients never send it), as Triton's ``control_input`` with one ``control``."""

    name: str = Field(min_length=1)
    """The model input that gets the control's value."""
    kind: ControlKind
    """``CONTROL_SEQUENCE_START`` (true on a sequence's first request), ``CONTROL_SEQUENCE_END`` (true on its
    last), ``CONTROL_SEQUENCE_READY`` (true: the row holds a request; inferd never sends empty rows) or
    ``CONTROL_SEQUENCE_CORRID`` (the sequence id)."""
    int32_false_true: list[int] | None = Field(default=None, min_length=2, max_length=2)
    """START, END, READY: the INT32 values for false and true."""
    fp32_false_true: list[float] | None = Field(default=None, min_length=2, max_length=2)
    """START, END, READY: the FP32 values for false and true."""
    bool_false_true: list[bool] | None = Field(default=None, min_length=2, max_length=2)
    """START, END, READY: the BOOL values for false and true."""
    datatype: Literal[CORRID_DATATYPES] | None = None  # type: ignore[valid-type]
    """CORRID: the datatype the sequence id is given in (an integer type, or BYTES for string ids)."""

    @model_validator(mode="after")
    def _one_value_form(self) -> ControlInputConfig:
        given = [f for f in ("int32_false_true", "fp32_false_true", "bool_false_true") if getattr(self, f) is not None]
        if self.kind == "CONTROL_SEQUENCE_CORRID":
            if given or self.datatype is None:
                raise ValueError("a CONTROL_SEQUENCE_CORRID control takes a datatype and no false/true values")
        elif len(given) != 1 or self.datatype is not None:
            raise ValueError(f"a {self.kind} control takes exactly one of int32_false_true, fp32_false_true, "
                             "bool_false_true (and no datatype)")
        return self

    @property
    def input_datatype(self) -> str:
        """The V2 datatype of the tensor the model gets."""
        if self.datatype is not None:
            return str(self.datatype)
        if self.int32_false_true is not None:
            return "INT32"
        return "FP32" if self.fp32_false_true is not None else "BOOL"

    @property
    def false_true(self) -> tuple[int | float | bool, int | float | bool]:
        values = self.int32_false_true or self.fp32_false_true or self.bool_false_true or [0, 1]
        return values[0], values[1]


class StateConfig(_Strict):
    """One ``[[sequence_batching.state]]``: implicit state, as Triton's. The model's output ``output_name`` is kept
    per sequence and given back as its input ``input_name`` with the sequence's next request; zeros (empty strings
    for BYTES) on a sequence's first request. Clients neither send nor get these tensors."""

    input_name: str = Field(min_length=1)
    """The model input that gets the state."""
    output_name: str = Field(min_length=1)
    """The model output that holds the next state."""
    datatype: Literal[DATATYPES]  # type: ignore[valid-type]
    """The state's V2 datatype (input and output alike)."""
    shape: list[int]
    """Dimensions without the batch one (a batched model gets one row of state per request); -1: the initial
    state has 0 of that dimension, and the model's output decides it afterwards."""


class SequenceBatchingConfig(_Strict):
    """``[sequence_batching]``: a stateful model. Each request names its sequence (``sequence_id``) and says whether
    it starts or ends it (``sequence_start``, ``sequence_end``); a sequence's requests run one at a time, in order;
    requests of different sequences may run in one batch."""

    strategy: Literal["direct", "oldest"] = "direct"
    """``direct``: each live sequence holds one of ``max_candidate_sequences`` slots (default: max_batch_size per
    instance) and its requests run as soon as an instance is free, batched with what other sequences have ready;
    ``oldest``: the oldest requests of different sequences are batched, dynamic-batching style, up to
    ``max_batch_size`` rows, waiting up to ``max_queue_delay_microseconds`` for a preferred batch size."""
    max_sequence_idle_microseconds: int = Field(default=DEFAULT_IDLE_US, ge=1)
    """A live sequence with no request for this long is released (its state dropped, its slot freed); a later
    request with its id and no ``sequence_start`` is refused, naming the id."""
    max_candidate_sequences: int | None = Field(default=None, ge=1)
    """Sequences that run at once; a sequence started beyond them waits (its requests queued, in Triton's backlog)
    until one ends or is released. Default: max_batch_size (1 without a batch dimension) times the instances for
    ``direct``, 1024 for ``oldest``."""
    max_queue_delay_microseconds: int = Field(default=0, ge=0)
    """How long the first request of a batch may wait for other sequences' requests to join it; 0: batch only
    what is ready together."""
    preferred_batch_sizes: list[int] = Field(default_factory=list)
    """``oldest``: batch sizes run as soon as they are reached."""
    control_input: list[ControlInputConfig] = Field(default_factory=list)
    """The control tensors (``[[sequence_batching.control_input]]``)."""
    state: list[StateConfig] = Field(default_factory=list)
    """Implicit state (``[[sequence_batching.state]]``)."""

    @model_validator(mode="after")
    def _distinct(self) -> SequenceBatchingConfig:
        names = [c.name for c in self.control_input] + [s.input_name for s in self.state]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"input {', '.join(map(repr, repeated))} is given more than one control or state")
        if self.preferred_batch_sizes and self.strategy != "oldest":
            raise ValueError("preferred_batch_sizes applies to strategy \"oldest\"")
        return self


def from_triton(section: Any) -> dict[str, Any]:
    """Triton's ``sequence_batching`` JSON (a load's ``config`` parameter, or what ``/config`` reports) as the
    ``[sequence_batching]`` table; ValueError naming what cannot be taken. uint64 fields may be strings, as
    protobuf's JSON writes them."""
    if not isinstance(section, dict):
        raise ValueError("sequence_batching must be an object")
    table: dict[str, Any] = {}
    if "max_sequence_idle_microseconds" in section:
        table["max_sequence_idle_microseconds"] = _number(section["max_sequence_idle_microseconds"])
    for strategy in ("direct", "oldest"):
        given = section.get(strategy)
        if isinstance(given, dict):
            table["strategy"] = strategy
            if "max_queue_delay_microseconds" in given:
                table["max_queue_delay_microseconds"] = _number(given["max_queue_delay_microseconds"])
            if strategy == "oldest" and given.get("max_candidate_sequences"):
                table["max_candidate_sequences"] = _number(given["max_candidate_sequences"])
            if strategy == "oldest" and given.get("preferred_batch_size"):
                table["preferred_batch_sizes"] = [_number(v) for v in given["preferred_batch_size"]]
    table["control_input"] = [_control_from_triton(c) for c in section.get("control_input") or []]
    table["state"] = [_state_from_triton(s) for s in section.get("state") or []]
    return table


def _number(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    raise ValueError(f"expected an integer, got {value!r}")


def _datatype(value: Any) -> str:
    name = str(value).removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def _control_from_triton(entry: Any) -> dict[str, Any]:
    controls = entry.get("control") if isinstance(entry, dict) else None
    if not isinstance(controls, list) or len(controls) != 1 or not isinstance(controls[0], dict):
        raise ValueError(f"control_input {entry!r}: inferd takes exactly one control per control input")
    control = controls[0]
    found: dict[str, Any] = {"name": entry.get("name"), "kind": control.get("kind", "CONTROL_SEQUENCE_START")}
    for key in ("int32_false_true", "fp32_false_true", "bool_false_true"):
        if control.get(key):
            found[key] = list(control[key])
    if found["kind"] == "CONTROL_SEQUENCE_CORRID":
        found["datatype"] = _datatype(control.get("data_type", "TYPE_UINT64"))
    return found


def _state_from_triton(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise ValueError(f"state {entry!r} must be an object")
    if entry.get("initial_state"):
        raise ValueError(f"state {entry.get('input_name')!r}: inferd starts a state at zeros (no initial_state)")
    return {"input_name": entry.get("input_name"), "output_name": entry.get("output_name"),
            "datatype": _datatype(entry.get("data_type")), "shape": [_number(d) if d != -1 else -1
                                                                      for d in entry.get("dims", [])]}
