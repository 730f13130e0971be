"""What ``inferd serve`` does once its command line is read, free of Typer and Click: :mod:`inferd.cli.serve` (the
Typer command) and :mod:`inferd.cli.fast` (the same command line read without Typer, for a faster start) both call
:func:`serve`. Errors go through :func:`inferd.cli.common.fail`, imported when there is one."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from inferd.dataplane import DataPlane
    from inferd.settings import ServerSettings


def serve(repo: Path | None, **options: Any) -> None:
    """Serve every model in ``repo`` (None: the one the environment names, :mod:`inferd.cli.repository_source`)
    until stopped; ``options`` are the command's, None where not given."""
    settings = make_settings(repo, **options)
    from inferd.cli.logs import configure_logging

    held = configure_logging(settings.log_level, settings.log_format, hold=True)  # Rich: once ready
    from inferd.security.startup import SecurityConfigError

    if settings.workers > 1:  # the supervisor is never "ready" itself: nothing of its log is held
        if held is not None:
            held.deliver()
        _serve_workers(settings)
        return
    from inferd.server.runner import run_until_stopped
    from inferd.server.runner import serve as run

    async def on_ready(_: DataPlane) -> None:
        if held is not None:
            await asyncio.get_running_loop().run_in_executor(None, held.deliver)

    try:
        run_until_stopped(run(settings, on_ready=on_ready))
    except SecurityConfigError as exc:
        _fail(f"cannot serve: {exc}", code=2)
    except OSError as exc:
        _fail(f"cannot serve: {exc}")


def _serve_workers(settings: ServerSettings) -> None:
    """``--workers N``: the supervisor (inferd.server.supervisor); the security settings are checked here first,
    so that a bad key file is one error rather than N workers failing."""
    from inferd.security.startup import SecurityConfigError, build_authenticator
    from inferd.security.tls import TLSFiles
    from inferd.server.supervisor import serve_workers

    try:
        build_authenticator(settings)
        TLSFiles.from_settings(settings.tls_certfile, settings.tls_keyfile, settings.tls_client_ca)
        code = serve_workers(settings)
    except SecurityConfigError as exc:
        _fail(f"cannot serve: {exc}", code=2)
    except OSError as exc:
        _fail(f"cannot serve: {exc}")
    if code:
        _fail("cannot serve: a worker could not start (its error is above)", code=code)


def make_settings(repo: Path | None, **given: Any) -> ServerSettings:
    """Defaults, then INFERD_* variables, then the platform variables, then what the command line gave
    (``given``: every option of the command that is a setting, None where not given; ``repo`` None: the
    repository the environment names)."""
    from inferd.settings import InvalidSettingsError, load_settings

    if repo is None:
        from inferd.cli.repository_source import NoRepositoryError, find_repository

        try:
            repo = find_repository(state_dir=given.get("state_dir"))
        except NoRepositoryError as exc:
            _fail(str(exc), code=2)

    if not repo.is_dir():
        _fail(f"model repository {repo} does not exist or is not a folder", code=2)
    options = {k: v for k, v in given.items() if v is not None}
    try:
        return load_settings({**options, "repository": repo}, flags=given)
    except InvalidSettingsError as exc:
        _fail(str(exc).replace("\n", "\nerror: "), code=2)


def _fail(message: str, code: int = 1) -> NoReturn:
    from inferd.cli.common import fail

    fail(message, code)
