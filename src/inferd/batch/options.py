"""What a batch job does with its input: mini-batch size, concurrency, retries, error threshold, layout."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

FORMATS = ("csv", "jsonl", "parquet")
"""Input and output formats a batch job reads and writes."""
ENGINES = ("local", "ray")

Engine = Literal["local", "ray"]


class BatchError(Exception):
    """A batch job that cannot start or cannot go on; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class BatchOptions:
    """How to run a batch job. Every field has a default; :meth:`validated` checks them all at once."""

    batch_size: int = 1024
    """Rows per mini-batch: one inference request, one part of the output. At most the model's max_batch_size."""
    concurrency: int = 2
    """Mini-batches in flight at once (local engine), or model actors (ray engine)."""
    timeout_s: float | None = 300.0
    """Seconds one mini-batch may take before it counts as failed (and is retried); None for no limit."""
    retries: int = 2
    """Further attempts of a mini-batch that failed for a transient reason (timeout, model unavailable)."""
    max_errors: int | float | None = None
    """Failed records allowed: a count (int >= 0) or a fraction of the rows (float between 0 and 1).
    None allows any number: every failed record still goes to the errors file."""
    join: bool = False
    """Append the predictions to the input columns; otherwise write the predictions (and key) only."""
    key: str | None = None
    """An id column of the input carried through to every output row and error record."""
    mapping: Mapping[str, str] = field(default_factory=dict)
    """Model input name -> input column name, where the names differ."""
    output_format: str | None = None
    """csv, jsonl or parquet; by default the format of each input file."""
    engine: Engine = "local"
    restart: bool = False
    """Discard the journal of an earlier run of this job and start over."""
    model_version: str | None = None
    """Model version; by default the newest ready one."""

    def validated(self) -> BatchOptions:
        """This object, or :class:`BatchError` naming every option that is out of range."""
        problems = [p for p in _problems(self) if p]
        if problems:
            raise BatchError("invalid batch options: " + "; ".join(problems))
        return self

    def to_json(self) -> dict[str, Any]:
        """Every option as JSON values (what the job store keeps); :meth:`from_json` reads it back."""
        return {**{name: getattr(self, name) for name in self.__dataclass_fields__}, "mapping": dict(self.mapping)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BatchOptions:
        """The options :meth:`to_json` wrote (names this inferd does not know are ignored)."""
        return cls(**{name: value for name, value in data.items() if name in cls.__dataclass_fields__})

    def fingerprint(self) -> dict[str, Any]:
        """The options that change the output's bytes: a resumed run must use the same ones."""
        return {
            "batch_size": self.batch_size,
            "join": self.join,
            "key": self.key,
            "mapping": dict(sorted(self.mapping.items())),
            "output_format": self.output_format,
        }


def _problems(options: BatchOptions) -> list[str]:
    return [
        _positive("batch_size", options.batch_size),
        _positive("concurrency", options.concurrency),
        "" if options.timeout_s is None or options.timeout_s > 0 else f"timeout_s must be > 0, got {options.timeout_s}",
        "" if _is_int(options.retries) and options.retries >= 0 else f"retries must be >= 0, got {options.retries!r}",
        _threshold_problem(options.max_errors),
        "" if options.output_format in (None, *FORMATS)
        else f"output_format must be one of {', '.join(FORMATS)}, got {options.output_format!r}",
        "" if options.engine in ENGINES else f"engine must be one of {', '.join(ENGINES)}, got {options.engine!r}",
        "" if options.key is None or options.key else "key must be a column name, not empty",
    ]


def _positive(name: str, value: object) -> str:
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return "" if ok else f"{name} must be a positive integer, got {value!r}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _threshold_problem(value: int | float | None) -> str:
    if value is None:
        return ""
    if _is_int(value):
        return "" if value >= 0 else f"max_errors as a count must be >= 0, got {value}"
    if isinstance(value, float) and 0.0 <= value < 1.0:
        return ""
    return f"max_errors must be a count (an integer >= 0) or a fraction (0 <= x < 1), got {value!r}"


def parse_max_errors(text: str) -> int | float:
    """'10' -> 10 records; '0.01' or '1%' -> a fraction of the rows. ValueError when it is neither."""
    text = text.strip()
    if text.endswith("%"):
        value = float(text[:-1]) / 100
    elif text.isascii() and text.isdigit():
        return int(text)
    else:
        value = float(text)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{text!r} is neither a count (an integer) nor a fraction between 0 and 1")
    return value


def error_limit(max_errors: int | float | None, rows: int | None) -> int | None:
    """The number of failed records allowed for ``rows`` rows (None: no limit, or not known yet)."""
    if max_errors is None:
        return None
    if isinstance(max_errors, int):
        return max_errors
    return None if rows is None else int(max_errors * rows)
