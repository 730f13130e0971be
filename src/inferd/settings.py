"""Server settings: defaults, then ``INFERD_*`` environment variables, then command-line options.

The platform contracts inferd speaks also set ports through their own variables, honoured when present:
``AIP_HTTP_PORT`` / ``AIP_PREDICT_ROUTE`` / ``AIP_HEALTH_ROUTE`` (Vertex AI custom containers) and
``SAGEMAKER_BIND_TO_PORT`` (SageMaker).
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import ByteSize, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from inferd.config import problem
from inferd.loading import DEFAULT_EXECUTION_TIMEOUT_S, DEFAULT_MAX_BATCH_SIZE, ServerDefaults
from inferd.security.keys import ApiKey


class ServerSettings(BaseSettings):
    """Every setting is also an ``INFERD_<NAME>`` environment variable (JSON for lists and mappings); docs/reference.md
    lists them all, generated from these docstrings by ``scripts/generate_reference.py``."""

    model_config = SettingsConfigDict(env_prefix="INFERD_", extra="forbid")  # docstrings: read by generate_reference.py

    repository: Path = Path("models")
    """Model repository folder to serve."""
    host: str = "127.0.0.1"
    """Address to bind. Loopback by default: exposing the server is a decision, not an accident."""
    public_url: str | None = None
    """The server's base URL as its clients reach it (``https://inferd.example.com``): the links of asynchronous
    jobs (``status_url``, ``result_url``, ``Location``, callback bodies) start with it. Unset: those links are paths
    (``/v2/jobs/...``), never built from a request's ``Host`` header."""
    http_port: int = Field(default=8080, ge=0, le=65535)
    """HTTP port (REST: V2, KServe V1, SageMaker, Vertex AI, /metrics, /docs). Vertex AI's ``AIP_HTTP_PORT`` and
    SageMaker's ``SAGEMAKER_BIND_TO_PORT`` set it too."""
    grpc_port: int = Field(default=8081, ge=0, le=65535)
    """gRPC port; 0 turns the gRPC server off."""
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Largest request body accepted over HTTP (and largest gRPC message); bigger ones get 413."""
    strict_readiness: bool = True
    """Report ready (``/v2/health/ready``, ``/ping``, the Vertex health route) only when every model in the
    repository loaded; false: ready once the start-up load is over, whatever failed to load."""
    require_async: bool = False
    """Report not ready while asynchronous inference is off (its state folder held by another server, a store
    that cannot open): for servers that exist to drain the async queue. False: readiness is about the models,
    and ``/v2/health/ready`` says under ``unavailable`` that async inference is off, and why."""
    max_batch_size: int = Field(default=DEFAULT_MAX_BATCH_SIZE, ge=1)
    """Rows one request may carry to a batched model, unless its model.toml says otherwise."""
    dynamic_batching: bool | None = None
    """Stack concurrent requests into one batch, for models whose model.toml does not say. Unset: on for ONNX
    models with a batch dimension and no one-dimensional input (with no queue delay: requests that arrive
    together), off for the others."""
    max_queue_delay_us: int = Field(default=0, ge=0)
    """With dynamic batching: how long a request may wait for others to join its batch (model.toml overrides)."""
    max_queue_size: int = Field(default=1024, ge=1)
    """Requests that may wait per model; one more gets 503 with Retry-After (model.toml overrides)."""
    execution_timeout_s: float = Field(default=DEFAULT_EXECUTION_TIMEOUT_S, ge=0)
    """Longest one model call may run, for models whose model.toml does not say (``[instances]
    execution_timeout_s``); then its callers get 504 / DEADLINE_EXCEEDED. 0: no limit."""
    default_model: str | None = None
    """Model that SageMaker ``/invocations`` calls without an ``X-Amzn-SageMaker-Target-Model`` header, and
    the Vertex AI predict route, are sent to; unset: the repository's only model (a repository of several
    answers 400 naming this setting)."""
    predict_route: str | None = None
    """Path of an extra route that takes a KServe V1 body (``{"instances": [...]}``) for ``default_model``;
    Vertex AI sets it through ``AIP_PREDICT_ROUTE``. Unset: no such route."""
    health_route: str | None = None
    """Path of an extra readiness route (200 when ready, else 503); Vertex AI sets it through
    ``AIP_HEALTH_ROUTE``. Unset: no such route."""
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    """Least severe log records written: ``debug``, ``info``, ``warning``, ``error`` or ``critical`` (any case)."""
    # -- models on demand (docs/models.md) --
    model_control: Literal["startup", "on-demand"] = "startup"
    """When models load. ``startup``: every model in the repository at start (and through the repository API).
    ``on-demand``: none at start; a request for a model that is not loaded waits while it loads (concurrent
    requests share one load), under ``memory_budget`` and ``idle_unload_s``."""
    load_timeout_s: float = Field(default=300.0, ge=0)
    """With ``on-demand``: longest a load started by a request may take; its waiting requests then get 503 with
    the reason (the load itself cannot be interrupted: it is unloaded when it ends). 0: no limit."""
    memory_budget: ByteSize | None = None
    """With ``on-demand``: memory the loaded models may hold together (bytes, or a size such as ``2GiB``); a load
    that would pass it first unloads the least recently used idle models. Each model counts its model.toml
    ``memory_size``, else what its load measured. Unset: no budget."""
    idle_unload_s: float = Field(default=0.0, ge=0)
    """With ``on-demand``: unload a model after this many seconds without a request (scale to zero; its next
    request loads it again), for models whose model.toml does not say. 0: never."""
    poll_s: float = Field(default=0.0, ge=0)
    """Look at the repository folder every this many seconds and follow it: new models and versions are
    picked up, removed ones unloaded once their requests finish, a changed model.toml reloads its model (an
    invalid one leaves the old versions serving, the error in the repository index). 0: no polling."""
    cache_bytes: ByteSize = Field(default=ByteSize(64 * 1024 ** 2))
    """Memory the response cache may hold for every model together (bytes, or a size such as ``256MiB``); the
    least recently used results go first. Models opt in with model.toml ``[cache] enabled = true``. 0: no cache."""
    cache_ttl_s: float = Field(default=0.0, ge=0)
    """Seconds a cached result may be served, for models whose model.toml does not say. 0: no limit."""
    # -- observability (docs/observability.md) --
    log_format: Literal["text", "json"] = "text"
    """``text`` for people at a terminal; ``json``: one JSON object per line (timestamp, level, logger, message,
    request_id and extra fields), written by a background thread."""
    access_log: bool = False
    """Log one line per HTTP request (method, path, status, duration, request id, bytes)."""
    capture_dir: Path | None = None
    """Folder for data capture (model.toml ``[capture]``) when the model names none; default
    ``<state_dir>/capture``."""
    capture_buffer: int = Field(default=1024, ge=1)
    """Captured requests that may wait for the writer; past that, captures are dropped and counted
    (``inferd_capture_dropped_total``), never the request slowed."""
    # -- asynchronous inference (docs/async.md) --
    state_dir: Path = Path(".inferd")
    """Folder for the server's durable state: the job store (``jobs.db``) and large payloads (``payloads/``).
    One server per folder."""
    job_store: str | None = None
    """Where asynchronous jobs are kept. Empty: SQLite in ``state_dir``, for one server. A PostgreSQL URL
    (``postgresql://user:password@host:5432/db``; needs the ``postgres`` extra): one queue that any number of
    servers share, every payload kept in the database (docs/async.md)."""
    job_lease_s: float = Field(default=30.0, gt=0)
    """With a shared job store: how long a job a server claimed stays its own without the server renewing the
    lease (it renews every third of this while it lives). A job of a server that died runs again elsewhere
    after at most this long."""
    async_max_body_bytes: int = Field(default=1024 ** 3, ge=1024)
    """Largest request body (or referenced input file) accepted by ``infer-async``; bigger ones get 413."""
    async_inline_payload_bytes: int = Field(default=1024 * 1024, ge=0)
    """Request and result bodies up to this size are kept inside the job store; larger ones as files."""
    async_concurrency_per_model: int = Field(default=2, ge=1)
    """Asynchronous jobs that may run at once per model; real-time requests interleave with the rest."""
    async_max_attempts: int = Field(default=3, ge=1)
    """Attempts per job, counting one cut short by a server crash; then the job fails with its last error."""
    async_retry_backoff_s: float = Field(default=1.0, ge=0)
    """Wait before a job's (or a callback's) second attempt; it doubles for each later one."""
    async_ttl_s: float = Field(default=24 * 3600, gt=0)
    """How long a finished job keeps its result; then it turns ``expired``, its payloads deleted."""
    async_callback_url: str | None = None
    """Default URL that receives a POST of each finished job's status (header ``Inference-Callback-Url`` overrides)."""
    async_model_callback_urls: dict[str, str] = Field(default_factory=dict)
    """Callback URL per model name (JSON in the environment), between the header and the server default."""
    async_callback_max_attempts: int = Field(default=5, ge=1)
    """Delivery attempts per callback."""
    async_callback_allowed: list[str] = Field(default_factory=list)
    """Where callbacks may be sent (``Inference-Callback-Url``; JSON list): host names, IP addresses and networks
    (``hooks.example.com``, ``10.0.0.5``, ``10.0.0.0/24``: any port and path) and URL prefixes
    (``https://hooks.example.com/inferd/``). Empty: only ``async_callback_url`` and ``async_model_callback_urls``,
    which always count as listed. Loopback, private, link-local and other non-global addresses, also when a
    listed name resolves to one, need their address or network listed. Another URL gets 400 at submission."""
    async_input_roots: list[str] = Field(default_factory=list)
    """Folders and URL prefixes ``Inference-Input-Location`` may name; empty: input references are refused."""
    # -- batch jobs (docs/batch.md) --
    batch_roots: list[str] = Field(default_factory=list)
    """Folders that batch jobs started over HTTP (``POST /v2/batch/jobs``) may read from and write to; empty:
    batch jobs over HTTP are refused (403)."""
    # -- security and limits (docs/security.md) --
    api_keys_file: Path | None = None
    """TOML or JSON file of API key records (name, sha256 of the key, scopes); with any key configured,
    every call but the health probes needs one (``Authorization: Bearer <key>`` or ``x-api-key``)."""
    api_keys: list[ApiKey] = Field(default_factory=list)
    """More key records, as a JSON list in ``INFERD_API_KEYS``; added to the file's."""
    allow_unauthenticated: bool = False
    """Serve without keys on an address other than loopback (refused otherwise), for a server behind
    something else that authenticates callers. Logs a warning at start."""
    tls_certfile: Path | None = None
    """Server certificate (PEM, with intermediates) for HTTPS and gRPC over TLS; needs ``tls_keyfile``."""
    tls_keyfile: Path | None = None
    """Private key (PEM, unencrypted) of ``tls_certfile``."""
    tls_client_ca: Path | None = None
    """CA certificates (PEM); when set, clients must present a certificate this CA signed (mutual TLS)."""
    max_tensor_elements: int = Field(default=1024 ** 3, ge=1)
    """Most elements one input tensor of a request may have (1 Gi: a 1 GiB asynchronous request of UINT8
    fits); more is refused with 400 / INVALID_ARGUMENT before any array is built. Lower it to bound the work
    one request may ask of a model."""
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    """Largest request line plus headers accepted over HTTP (64 KiB); more gets 431 and the connection closes."""
    max_connections: int = Field(default=1024, ge=1)
    """Open HTTP connections at once; a request on one more gets 503 and its connection is closed."""
    header_timeout_s: int = Field(default=10, ge=1)
    """Seconds a client has, from a request's first byte, to send its line and headers; later gets 408 and the
    connection closes (a client trickling headers would otherwise hold a connection forever)."""
    body_timeout_s: int = Field(default=30, ge=1)
    """Seconds a request body may go without a byte arriving (between the headers and the first piece, or
    between two pieces); longer gets 408 and the connection closes. Slow but steady uploads are not cut off."""
    keep_alive_timeout_s: int = Field(default=5, ge=1)
    """Seconds an idle HTTP keep-alive connection stays open. Behind a load balancer, set it longer than the
    balancer's own idle timeout (60 s on AWS ALB), so that the balancer, not inferd, closes idle connections."""
    workers: int = Field(default=1, ge=1, le=256)
    """Server processes sharing the HTTP and gRPC ports (``SO_REUSEPORT``), each with its own model instances, under
    one supervisor that replaces a worker that dies (docs/scale-out.md). 1: one process and no supervisor."""
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    """Seconds a stopping server (SIGTERM, SIGINT) lets the HTTP requests in progress finish; then it closes the
    connections still busy. Idle connections close at once, and no new ones are accepted."""

    @field_validator("public_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"must be an http:// or https:// URL without query or fragment, got {value!r}")
        return value.rstrip("/")

    @field_validator("job_store")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value and value.split("://", 1)[0] not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql://user:password@host:port/database URL, or empty for SQLite")
        return value or None

    @field_validator("log_level", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("memory_budget", "idle_unload_s", mode="after")
    @classmethod
    def _needs_on_demand(cls, value: object, info: ValidationInfo) -> object:
        if value and info.data.get("model_control") != "on-demand":
            raise ValueError("it unloads models that the next request loads again: it needs "
                             "--model-control on-demand (INFERD_MODEL_CONTROL=on-demand)")
        return value

    def model_defaults(self) -> ServerDefaults:
        return ServerDefaults(self.max_batch_size, self.dynamic_batching, self.max_queue_delay_us,
                              self.max_queue_size, self.execution_timeout_s)


PLATFORM_VARIABLES: tuple[tuple[str, str], ...] = (
    ("AIP_HTTP_PORT", "http_port"),
    ("SAGEMAKER_BIND_TO_PORT", "http_port"),
    ("AIP_PREDICT_ROUTE", "predict_route"),
    ("AIP_HEALTH_ROUTE", "health_route"),
)
"""The variables of the Vertex AI and SageMaker container contracts, and the setting each sets; the first one
set wins. They override ``INFERD_*`` variables, and the command line overrides them."""


class InvalidSettingsError(ValueError):
    """Settings that cannot be used: one line per problem, naming the option and the variable that set it."""


def platform_overrides(environ: Mapping[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """Each setting a platform variable gives: the variable's name and its value (checked by the settings)."""
    env = os.environ if environ is None else environ
    found: dict[str, tuple[str, str]] = {}
    for variable, setting in PLATFORM_VARIABLES:
        value = env.get(variable)
        if value and setting not in found:
            found[setting] = (variable, value)
    return found


def load_settings(given: Mapping[str, Any], flags: Collection[str] = (),
                  environ: Mapping[str, str] | None = None) -> ServerSettings:
    """Defaults, then ``INFERD_*`` variables, then the platform variables, then ``given`` (the command line's
    options, by setting name; ``flags`` names every setting the command has an option for). Raises
    :class:`InvalidSettingsError`, one line per problem, each naming where the value came from."""
    platform = platform_overrides(environ)
    values: dict[str, Any] = {**{setting: value for setting, (_, value) in platform.items()}, **given}
    try:
        return ServerSettings(**values)
    except ValidationError as exc:
        sources = {**{setting: variable for setting, (variable, _) in platform.items()},
                   **{setting: option(setting) for setting in given}}
        lines = [_describe(error, flags, sources) for error in exc.errors()]
        raise InvalidSettingsError("\n".join(lines)) from None
    except SettingsError as exc:  # an INFERD_* value that should be JSON and is not
        field = re.search(r'field "(\w+)"', str(exc))
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        if field is None:
            raise InvalidSettingsError(f"{exc}{cause}") from None
        raise InvalidSettingsError(f"{variable(field.group(1))}: not valid JSON{cause}") from None


def option(setting: str) -> str:
    """The command-line option of a setting (where the command has one)."""
    return "--" + setting.replace("_", "-")


def variable(setting: str) -> str:
    """The environment variable of a setting."""
    return "INFERD_" + setting.upper()


def _describe(error: ErrorDetails, flags: Collection[str], sources: Mapping[str, str]) -> str:
    """'--http-port / INFERD_HTTP_PORT: Input should be ..., got 70000 (from --http-port)'."""
    setting = str(error["loc"][0]) if error["loc"] else ""
    names = [option(setting)] if setting in flags else []
    names.append(variable(setting))
    source = sources.get(setting, variable(setting))
    inner = ".".join(str(part) for part in error["loc"][1:])
    text = problem(error, show_input=setting not in SECRET_SETTINGS)
    where = "" if len(names) == 1 and source == names[0] else f" (from {source})"
    return f"{' / '.join(names)}: {inner + ': ' if inner else ''}{text}{where}"


SECRET_SETTINGS = frozenset({"api_keys"})
"""Settings whose values an error message does not repeat."""
