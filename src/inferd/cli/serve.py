"""``inferd serve``: the real-time server, V2 over REST and gRPC plus the V1, SageMaker and Vertex routes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from inferd.settings import ServerSettings


def serve(  # noqa: PLR0913, PLR0917 - one parameter per command-line option
    repo: Annotated[Path | None, typer.Argument(
        metavar="REPO", help="Model repository folder. Without it: INFERD_REPOSITORY, else /opt/ml/model under "
                             "SageMaker, else Vertex AI's AIP_STORAGE_URI (copied when remote).",
        show_default=False)] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind [default: 127.0.0.1].")] = None,
    http_port: Annotated[int | None, typer.Option(help="HTTP port [default: 8080].")] = None,
    grpc_port: Annotated[int | None, typer.Option(help="gRPC port, 0 for none [default: 8081].")] = None,
    max_body_bytes: Annotated[int | None, typer.Option(help="Largest request body [default: 64 MiB].")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error [default: info].")] = None,
    log_format: Annotated[str | None, typer.Option(help="text or json (JSON Lines with request ids) "
                                                        "[default: text].")] = None,
    access_log: Annotated[bool | None, typer.Option("--access-log", help="Log one line per HTTP request.")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="Folder for the asynchronous job store and payloads "
                                                        "[default: .inferd].")] = None,
    job_store: Annotated[str | None, typer.Option(help="postgresql://... to share one asynchronous queue between "
                                                       "servers; without it, SQLite in --state-dir.")] = None,
    api_keys_file: Annotated[Path | None, typer.Option(help="TOML or JSON file of API key records "
                                                            "(see `inferd keys create`).")] = None,
    tls_certfile: Annotated[Path | None, typer.Option(help="Server certificate (PEM) for HTTPS and gRPC TLS.")] = None,
    tls_keyfile: Annotated[Path | None, typer.Option(help="Private key (PEM) of --tls-certfile.")] = None,
    tls_client_ca: Annotated[Path | None, typer.Option(help="CA (PEM) that client certificates must come "
                                                            "from; makes them required.")] = None,
    allow_unauthenticated: Annotated[bool | None, typer.Option(
        "--allow-unauthenticated", help="Serve without API keys on an address other than loopback.")] = None,
    model_control: Annotated[str | None, typer.Option(help="startup (load every model at start) or on-demand "
                                                           "(load a model on its first request) [default: "
                                                           "startup].")] = None,
    memory_budget: Annotated[str | None, typer.Option(help="On demand: memory the loaded models may hold, such "
                                                           "as 2GiB; least recently used idle models make room.")]
    = None,
    idle_unload_s: Annotated[float | None, typer.Option(help="On demand: unload a model after so many seconds "
                                                             "without a request, 0 for never [default: 0.0].")] = None,
    load_timeout_s: Annotated[float | None, typer.Option(help="On demand: longest a load may take [default: "
                                                              "300.0].")] = None,
    poll_s: Annotated[float | None, typer.Option(help="Follow the repository folder's changes, looking every "
                                                      "so many seconds; 0 for never [default: 0.0].")] = None,
    workers: Annotated[int | None, typer.Option(help="Server processes sharing the ports, each with its own "
                                                     "models; a dead one is replaced [default: 1].")] = None,
) -> None:
    """Serve every model in REPO until Ctrl-C (SageMaker's `docker run IMAGE serve`: no REPO). Settings also come
    from INFERD_* environment variables."""
    from inferd.cli.serving import serve as run

    run(repo, host=host, http_port=http_port, grpc_port=grpc_port, max_body_bytes=max_body_bytes,
        log_level=log_level, state_dir=state_dir, job_store=job_store, log_format=log_format, access_log=access_log,
        api_keys_file=api_keys_file, tls_certfile=tls_certfile, tls_keyfile=tls_keyfile,
        tls_client_ca=tls_client_ca, allow_unauthenticated=allow_unauthenticated, model_control=model_control,
        memory_budget=memory_budget, idle_unload_s=idle_unload_s, load_timeout_s=load_timeout_s, poll_s=poll_s,
        workers=workers)


def make_settings(repo: Path | None, **given: Any) -> ServerSettings:
    """Defaults, then INFERD_* variables, then the platform variables, then what the command line gave
    (``given``: every option of the command that is a setting, None where not given)."""
    from inferd.cli.serving import make_settings as made

    return made(repo, **given)
