"""The ``model.toml`` schema, and errors that name the file, line and key that is wrong.

Every key is optional: a model folder with a bare artifact needs no ``model.toml`` at all.

.. code-block:: toml

    runtime = "sklearn"           # onnx | embeddings | sklearn | xgboost | lightgbm | torch | python | llama_cpp |
                                  # echo_llm (default: from the artifact)
    artifact = "model.joblib"     # file name inside each version folder (default: the one known artifact)
    description = "spam filter"
    max_batch_size = 256          # largest batch (rows) one request may carry (default: the server's);
                                  # 0: no batch dimension, as in Triton

    [versions]
    policy = "latest"             # latest | all | specific
    latest = 1                    # with policy latest: how many of the newest versions to serve
    specific = [1, 3]             # with policy specific: which versions

    [[inputs]]                    # signature override; must agree with what the artifact declares
    name = "text"
    datatype = "BYTES"
    shape = [-1]
    format = "FORMAT_NONE"        # an image input's layout for /config: FORMAT_NHWC | FORMAT_NCHW

    [labels]                      # class labels for Triton's classification extension: output = file
    probabilities = "labels.txt"  # in the model folder, one label per line (line n names class n)

    [options]                     # runtime-specific, checked by the runtime (for example allow_pickle)
    allow_pickle = true

    [batching]                    # dynamic batching: concurrent requests stacked along the batch dimension
    enabled = true
    max_queue_delay_us = 500      # how long the first request may wait for others to join
    preferred_batch_sizes = [8, 16]

    [queue]
    max_size = 1024               # requests that may wait; more are refused at once (HTTP 503 + Retry-After)
    timeout_us = 0                # default time a request may wait in the queue (0: none); V2 `timeout` overrides
    priority_levels = 2           # V2 `priority` 1 (highest) .. priority_levels
    default_priority = 2

    [instances]
    count = 1                     # batches that may run at once
    kind = "thread"               # thread (in this process) | process (supervised workers, shared memory)
    execution_timeout_s = 30      # longest one model call may run (default: the server's; 0: none): 504
    max_requests = 10000          # process workers: replace each after so many calls (0: never)
    max_rss_mb = 2048             # process workers: replace one whose resident memory passes this (0: never)

    [generation]                  # generative models (.gguf): see docs/generative.md
    context = 2048                # tokens per sequence, prompt and output
    slots = 4                     # sequences generated at once (continuous batching)
    max_tokens = 256              # output tokens of a request that sets no limit
    temperature = 1.0             # default sampling; 0: greedy
    top_p = 1.0
    pinned = false                # with --model-control on-demand: never unloaded (budget, idle)
    idle_unload_s = 600           # with --model-control on-demand: unload after so long without a request
    memory_size = "300MiB"        # what the model holds when loaded, for --memory-budget (default: measured)

    [capture]                     # data capture: sampled requests and responses written as JSON Lines
    enabled = true
    sample_percent = 10           # 0-100: share of successful requests captured
    destination = "/data/capture" # default: the server's capture_dir (<state_dir>/capture)
    max_file_bytes = 67108864     # start a new file past this size ...
    max_file_seconds = 3600       # ... or this age (and at every hour, which is a folder)

    [model_transaction_policy]    # Triton's name: see docs/decoupled.md
    decoupled = true              # a Python model whose predict yields any number of responses per request

    [cache]                       # response cache: identical inputs answered without running the model
    enabled = true
    ttl_s = 60                    # default: the server's cache_ttl_s (0: no limit)

    [sequence_batching]           # a stateful model: requests in sequences (see inferd.sequence_config)
    strategy = "direct"           # direct | oldest
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ByteSize, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from inferd.sequence_config import SequenceBatchingConfig
from inferd.signature import Signature, TensorSpec
from inferd.tensors import DATATYPES

CONFIG_FILE = "model.toml"

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A model.toml that cannot be used. The message starts with ``file:line:`` when the line is known."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TensorConfig(_Strict):
    """One ``[[inputs]]`` or ``[[outputs]]`` entry: a tensor of the signature."""

    name: str = Field(min_length=1)
    """The tensor's name, as requests and responses spell it."""
    datatype: Literal[DATATYPES]  # type: ignore[valid-type]
    """A V2 datatype: BOOL, UINT8-UINT64, INT8-INT64, FP16, FP32, FP64, BYTES or BF16."""
    shape: list[int]
    """Dimensions, -1 for one of any size; a first dimension of -1 is the batch (rows of a request)."""

    def to_spec(self) -> TensorSpec:
        return TensorSpec(self.name, self.datatype, tuple(self.shape))


class InputConfig(TensorConfig):
    """One ``[[inputs]]`` entry: a tensor of the signature, and how an image input is laid out."""

    format: Literal["FORMAT_NONE", "FORMAT_NHWC", "FORMAT_NCHW"] = "FORMAT_NONE"
    """The layout of an image input, as Triton names it: ``FORMAT_NHWC`` (height, width, channels) or
    ``FORMAT_NCHW`` (channels first). Reported in the model configuration, where Triton's image clients read it;
    inferd does not change the data."""


class VersionPolicy(_Strict):
    """``[versions]``: which version folders (``1/``, ``2/``, ...) are served."""

    policy: Literal["latest", "all", "specific"] = "latest"
    """``latest``: the newest ``latest`` versions; ``all``: every version; ``specific``: those listed."""
    latest: int = Field(default=1, ge=1)
    """With ``policy = "latest"``: how many of the newest versions to serve."""
    specific: list[int] = Field(default_factory=list)
    """With ``policy = "specific"``: the version numbers to serve."""

    @model_validator(mode="after")
    def _specific_needs_versions(self) -> VersionPolicy:
        if self.policy == "specific" and not self.specific:
            raise ValueError("policy 'specific' needs a non-empty 'specific' list of versions")
        return self

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve out of those found on disk, in ascending order."""
        ordered = sorted(available)
        if self.policy == "all":
            return ordered
        if self.policy == "specific":
            return [v for v in ordered if v in set(self.specific)]
        return ordered[-self.latest:]


class BatchingConfig(_Strict):
    """``[batching]``: dynamic batching, concurrent requests stacked along the batch dimension and run once."""

    enabled: bool | None = None
    """Dynamic batching; default: the server's setting (INFERD_DYNAMIC_BATCHING) or, when that is unset, the
    runtime's default (on for ONNX models, off for the others)."""
    max_queue_delay_us: int | None = Field(default=None, ge=0)
    """How long, in microseconds, the first request of a batch may wait for others to join it; 0: batch only
    what arrives together. Default: the server's ``max_queue_delay_us``."""
    preferred_batch_sizes: list[int] = Field(default_factory=list)
    """Batch sizes (rows) to run as soon as they are reached, without waiting out the queue delay."""


class QueueConfig(_Strict):
    """``[queue]``: the requests waiting for the model."""

    max_size: int | None = Field(default=None, ge=1)
    """Requests that may wait; one more is refused at once (HTTP 503 with Retry-After, gRPC UNAVAILABLE).
    Default: the server's ``max_queue_size``."""
    timeout_us: int = Field(default=0, ge=0)
    """How long, in microseconds, a request may wait in the queue before it fails (HTTP 504, gRPC
    DEADLINE_EXCEEDED); the V2 ``timeout`` parameter of a request overrides it; 0: no limit."""
    priority_levels: int = Field(default=1, ge=1)
    """Priority levels a request may ask for with the V2 ``priority`` parameter: 1 (served first) to this."""
    default_priority: int | None = Field(default=None, ge=1)
    """Priority of requests that ask for none, from 1 to ``priority_levels``; default: the middle level,
    ``(priority_levels + 1) // 2``."""

    @model_validator(mode="after")
    def _default_within_levels(self) -> QueueConfig:
        if self.default_priority is not None and self.default_priority > self.priority_levels:
            raise ValueError(
                f"default_priority {self.default_priority} is above priority_levels {self.priority_levels}"
            )
        return self


class InstancesConfig(_Strict):
    """``[instances]``: the copies of the model that run batches."""

    count: int = Field(default=1, ge=1)
    """Batches that may run at once: threads, or worker processes each with its own copy of the model."""
    kind: Literal["thread", "process"] = "thread"
    """``thread``: in the server's process; ``process``: supervised worker processes (respawned on a crash),
    tensors passed through shared memory, for runtimes that hold the GIL."""
    execution_timeout_s: float | None = Field(default=None, ge=0)
    """Longest one model call may run; then its callers get DEADLINE_EXCEEDED (HTTP 504). A worker process
    past it is killed and replaced; a thread cannot be stopped, so the version stops taking requests (not
    ready) until the call returns. Default: the server's ``execution_timeout_s``; 0: no limit."""
    max_requests: int = Field(default=0, ge=0)
    """Process instances: replace a worker after it has served this many calls (0: never), for models that
    leak memory."""
    max_rss_mb: int = Field(default=0, ge=0)
    """Process instances: replace a worker whose resident memory is above this after a call (0: never)."""

    @model_validator(mode="after")
    def _recycling_needs_processes(self) -> InstancesConfig:
        if self.kind != "process" and (self.max_requests or self.max_rss_mb):
            raise ValueError("max_requests and max_rss_mb recycle worker processes: they need kind = \"process\"")
        return self


class CaptureConfig(_Strict):
    """``[capture]``: data capture, sampled requests and responses written as JSON Lines files."""

    enabled: bool = False
    """Capture this model's inferences."""
    sample_percent: float = Field(default=100.0, ge=0, le=100)
    """Share of successful inferences captured, decided per request at random."""
    destination: str | None = None
    """Folder the records go under (relative: to the server's working folder); default the server's
    ``capture_dir``."""
    max_file_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    """A new file is started past this size."""
    max_file_seconds: float = Field(default=3600.0, gt=0)
    """A new file is started past this age (and at every hour, which is a folder)."""


class GenerationConfig(_Strict):
    """``[generation]``: limits and defaults of a generative model (a ``.gguf`` file)."""

    context: int = Field(default=2048, ge=16)
    """Tokens one sequence may hold, prompt and output together (at most what the model was trained on)."""
    slots: int = Field(default=4, ge=1)
    """Sequences generated at once, each with its own KV cache; more requests wait in the queue."""
    max_tokens: int = Field(default=256, ge=1)
    """Output tokens of a request that sets no limit (fewer when the context has no room for so many)."""
    temperature: float = Field(default=1.0, ge=0)
    """Sampling temperature of a request that sets none; 0: greedy."""
    top_p: float = Field(default=1.0, gt=0, le=1)
    """Nucleus sampling of a request that sets none; 1: off."""


def _in_model_folder(name: str) -> str:
    path = Path(name)
    if not name or path.is_absolute() or ".." in path.parts:
        raise ValueError("a labels file must be a file name inside the model folder")
    return name


LabelsFile = Annotated[str, AfterValidator(_in_model_folder)]


class CacheConfig(_Strict):
    """``[cache]``: the response cache. A request whose inputs (names, datatypes, shapes and bytes) match an earlier
    one's on the same model version is answered from the cache without running the model."""

    enabled: bool = False
    """Cache this model's results (only for a model whose result depends on its inputs alone)."""
    ttl_s: float | None = Field(default=None, ge=0)
    """Seconds a cached result may be served; default the server's ``cache_ttl_s``; 0: no limit."""


class TransactionPolicyConfig(_Strict):
    """``[model_transaction_policy]`` (Triton's name): how many responses a request gets."""

    decoupled: bool = False
    """A decoupled model answers a request with zero, one or many responses: a Python model whose ``predict``
    is a generator, streamed over gRPC ``ModelStreamInfer`` and HTTP ``generate_stream`` (docs/decoupled.md).
    It runs on threads (``kind = "thread"``), one request per model call, never from the response cache."""


class ModelConfig(_Strict):
    """A model folder's ``model.toml``."""

    runtime: str | None = None
    """``onnx``, ``embeddings``, ``sklearn``, ``xgboost``, ``lightgbm``, ``torch``, ``python``, ``llama_cpp`` (a
    GGUF language model) or ``echo_llm`` (a fake language model for tests); default: the runtime of the artifact
    found (``embeddings``, a sentence encoder in ``model.onnx`` with its tokenizer, is only chosen here)."""
    artifact: str | None = None
    """File name of the artifact inside each version folder; default: the one known artifact there."""
    description: str = ""
    """Shown by ``inferd models show``."""
    max_batch_size: int | None = Field(default=None, ge=0)
    """Most rows one request (and one merged batch) may carry to a batched model; default: the server's
    ``max_batch_size``. 0, as in Triton: the model has no batch dimension (a free first dimension is the model's
    own, requests are never stacked and a request's size is bounded only by the body and element limits)."""
    versions: VersionPolicy = Field(default_factory=VersionPolicy)
    """Which versions are served (the ``[versions]`` table)."""
    inputs: list[InputConfig] = Field(default_factory=list)
    """The signature's inputs (``[[inputs]]``): needed where the artifact does not declare them (a Python
    model, TorchScript), and checked against what it declares otherwise."""
    outputs: list[TensorConfig] = Field(default_factory=list)
    """The signature's outputs (``[[outputs]]``), as for ``inputs``."""
    labels: dict[str, LabelsFile] = Field(default_factory=dict)
    """Class labels of outputs (the ``[labels]`` table, Triton's ``label_filename``): ``output = "file"``, a text
    file in the model folder with one label per line, line n naming class n. A request that asks for an output's
    top classes (the ``classification`` parameter, ``class_count`` in tritonclient) gets them as
    ``"value:index:label"``; without labels, as ``"value:index"``."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Settings of the runtime (the ``[options]`` table), checked by the runtime's own schema."""
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    """Dynamic batching (the ``[batching]`` table)."""
    queue: QueueConfig = Field(default_factory=QueueConfig)
    """The request queue (the ``[queue]`` table)."""
    instances: InstancesConfig = Field(default_factory=InstancesConfig)
    """Copies of the model (the ``[instances]`` table)."""
    capture: CaptureConfig = Field(default_factory=CaptureConfig)
    """Data capture (the ``[capture]`` table)."""
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    """A generative model's limits and defaults (the ``[generation]`` table)."""
    cache: CacheConfig = Field(default_factory=CacheConfig)
    """The response cache (the ``[cache]`` table)."""
    sequence_batching: SequenceBatchingConfig | None = None
    """A stateful model (the ``[sequence_batching]`` table; see docs/sequences.md): requests name their sequence,
    run in order, and get control tensors and implicit state. Excludes ``[batching]`` and ``[cache]``."""
    model_transaction_policy: TransactionPolicyConfig = Field(default_factory=TransactionPolicyConfig)
    """Decoupled models (the ``[model_transaction_policy]`` table, as Triton names it)."""
    pinned: bool = False
    """With ``model_control = "on-demand"``: never unloaded to make room under ``memory_budget``, nor when idle."""
    idle_unload_s: float | None = Field(default=None, ge=0)
    """With ``model_control = "on-demand"``: unload the model after this many seconds without a request (its next
    request loads it again); 0: never. Default: the server's ``idle_unload_s``."""
    memory_size: ByteSize | None = None
    """Memory the model holds once loaded (bytes, or a size such as ``"300MiB"``), counted against the server's
    ``memory_budget``. Default: measured at load (the server's resident memory before and after)."""

    @model_validator(mode="after")
    def _batching_needs_a_batch(self) -> ModelConfig:
        if self.max_batch_size == 0 and self.batching.enabled:
            raise ValueError("max_batch_size = 0 means the model has no batch dimension: it cannot have "
                             "[batching] enabled = true")
        if self.sequence_batching is not None and (self.batching.enabled or self.cache.enabled):
            raise ValueError("a model with [sequence_batching] batches its sequences itself and its answers depend "
                             "on its state: it cannot have [batching] enabled = true nor [cache] enabled = true")
        if self.model_transaction_policy.decoupled:
            _check_decoupled(self)
        return self

    def signature_override(self) -> Signature | None:
        if not self.inputs and not self.outputs:
            return None
        return Signature(tuple(t.to_spec() for t in self.inputs), tuple(t.to_spec() for t in self.outputs))


def _check_decoupled(config: ModelConfig) -> None:
    """What a decoupled model cannot have: its responses stream from a generator on one of this process's
    threads, one request at a time."""
    if config.batching.enabled:
        raise ValueError("[model_transaction_policy] decoupled = true: each request runs alone (its responses "
                         "stream from the model as it makes them); it cannot have [batching] enabled = true")
    if config.instances.kind == "process":
        raise ValueError("[model_transaction_policy] decoupled = true needs [instances] kind = \"thread\": "
                         "responses stream from the model's thread in this process")
    if config.cache.enabled or config.capture.enabled:
        raise ValueError("[model_transaction_policy] decoupled = true: a stream of responses is neither cached "
                         "nor captured; remove [cache] and [capture] enabled = true")


def load_model_config(folder: Path) -> ModelConfig:
    """Read ``folder/model.toml``; defaults when there is none."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        return ModelConfig()
    text = path.read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return ModelConfig.model_validate(raw)
    except ValidationError as exc:
        raise config_error(path, text, exc) from None


def validate_options(folder: Path, options: dict[str, Any], schema: type[M]) -> M:
    """Check the ``[options]`` table against a runtime's own schema, with the same file:line errors."""
    try:
        return schema.model_validate(options)
    except ValidationError as exc:
        path = folder / CONFIG_FILE
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        raise config_error(path, text, exc, prefix=("options",)) from None


def config_error(path: Path, text: str, exc: ValidationError, prefix: tuple[str, ...] = ()) -> ConfigError:
    """One message for every problem pydantic found, each with its line and dotted key."""
    problems = []
    for error in exc.errors():
        loc = (*prefix, *error["loc"])
        key = ".".join(str(part) for part in loc) or "(top level)"
        line = locate_key(text, loc)
        where = f"{path}:{line}" if line else str(path)
        problems.append(f"{where}: key '{key}': {problem(error)}")
    return ConfigError("\n".join(problems))


def problem(error: ErrorDetails, show_input: bool = True) -> str:
    """What is wrong, in words, from one of pydantic's errors: its message without pydantic's own wording
    around it ("Value error, ..."), and the value that was given when it is a single value (shortened)."""
    if error["type"] == "extra_forbidden":
        return "unknown key"
    context = error.get("ctx") or {}
    message = str(context["error"]) if error["type"] == "value_error" and "error" in context else error["msg"]
    given = error.get("input")
    if not show_input or isinstance(given, dict | list) or given is None:
        return message
    shown = repr(given)
    return f"{message}, got {shown if len(shown) <= 60 else shown[:57] + '...'}"


_TABLE = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_ARRAY_TABLE = re.compile(r"^\s*\[\[\s*([^\[\]]+?)\s*\]\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-.\"' ]+?)\s*=")


def locate_key(text: str, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of ``text`` that defines the longest known prefix of ``loc``.

    TOML parsers do not keep positions, so this follows the document's table headers and keys itself. It
    understands ``[table]``, ``[[array.of.tables]]``, dotted and quoted keys, which covers model.toml.
    """
    wanted = tuple(str(p) for p in loc)
    best: tuple[int, int] = (0, 0)  # (matched length, line)
    table: tuple[str, ...] = ()
    counts: dict[tuple[str, ...], int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if match := _ARRAY_TABLE.match(line):
            name = _split_key(match.group(1))
            counts[name] = counts.get(name, -1) + 1
            table = (*name, str(counts[name]))
            path = table
        elif match := _TABLE.match(line):
            table = _split_key(match.group(1))
            path = table
        elif match := _KEY.match(line):
            path = (*table, *_split_key(match.group(1)))
        else:
            continue
        matched = _common_prefix(path, wanted)
        if matched > best[0] and matched == len(path):
            best = (matched, number)
    return best[1] or None


def _split_key(key: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in key.split("."))


def _common_prefix(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
