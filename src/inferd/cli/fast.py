"""``inferd serve REPO [options]`` read without Typer and Click: a process that starts to serve does not import the
CLI framework and the other commands (about 0.1 s of CPU, paid at every scale from zero).

Only a command line this reads with certainty takes this path: ``serve``, at most one REPO, and options of
:data:`OPTIONS` each given once (``--name value`` or ``--name=value``; flags without a value), every value converting
to its type. Anything else (``--help``, a root option before ``serve``, an unknown or repeated option, a value that
does not convert, ``--``) goes to Typer, which answers it exactly as before. :data:`OPTIONS` mirrors the Typer
command in :mod:`inferd.cli.serve`; ``tests/unit/cli/test_cli_fast.py`` checks that they agree.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

FLAG: Callable[[str], Any] = bool
"""An option that takes no value (given: True)."""

OPTIONS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "--host": ("host", str),
    "--http-port": ("http_port", int),
    "--grpc-port": ("grpc_port", int),
    "--max-body-bytes": ("max_body_bytes", int),
    "--log-level": ("log_level", str),
    "--log-format": ("log_format", str),
    "--access-log": ("access_log", FLAG),
    "--state-dir": ("state_dir", Path),
    "--job-store": ("job_store", str),
    "--api-keys-file": ("api_keys_file", Path),
    "--tls-certfile": ("tls_certfile", Path),
    "--tls-keyfile": ("tls_keyfile", Path),
    "--tls-client-ca": ("tls_client_ca", Path),
    "--allow-unauthenticated": ("allow_unauthenticated", FLAG),
    "--model-control": ("model_control", str),
    "--memory-budget": ("memory_budget", str),
    "--idle-unload-s": ("idle_unload_s", float),
    "--load-timeout-s": ("load_timeout_s", float),
    "--poll-s": ("poll_s", float),
    "--workers": ("workers", int),
}
"""``inferd serve``'s options: option -> (parameter, conversion)."""


def parse_serve(args: Sequence[str]) -> tuple[Path | None, dict[str, Any]] | None:
    """REPO (None: not given, as in SageMaker's ``docker run IMAGE serve``) and the options (every parameter, None
    where not given) of ``inferd serve ARGS``, or None when Typer should read them."""
    repo: Path | None = None
    given: dict[str, Any] = {}
    tokens = list(args)
    while tokens:
        token = tokens.pop(0)
        if token.startswith("-"):
            if not _read_option(token, tokens, given):
                return None
        elif repo is None and token:
            repo = Path(token)
        else:
            return None
    return repo, {parameter: given.get(parameter) for parameter, _ in OPTIONS.values()}


def _read_option(token: str, rest: list[str], given: dict[str, Any]) -> bool:
    """Read one option (its value from ``token`` or the next of ``rest``) into ``given``; False: leave it to Typer."""
    name, has_value, value = token.partition("=")
    found = OPTIONS.get(name)
    if found is None or found[0] in given:
        return False
    parameter, convert = found
    if convert is FLAG:
        given[parameter] = True
        return not has_value
    if not has_value:
        if not rest or rest[0].startswith("-"):
            return False  # no value, or one that starts with '-' (a negative number): Click decides
        value = rest.pop(0)
    try:
        given[parameter] = convert(value)
    except ValueError:
        return False
    return True


def serve(args: Sequence[str]) -> bool:
    """Run ``inferd serve ARGS`` when :func:`parse_serve` reads it (then exit as Typer would); False: it did not."""
    parsed = parse_serve(args)
    if parsed is None:
        return False
    from inferd.cli.logs import configure_logging
    from inferd.cli.serving import serve as run

    configure_logging("error", hold=True)  # as the root command does before any command (its --log-level default)
    try:
        run(parsed[0], **parsed[1])
    except KeyboardInterrupt:  # as Click says it
        print("\nAborted!", file=sys.stderr)
        raise SystemExit(1) from None
    except Exception as exc:
        typer = sys.modules.get("typer")  # a failure exit (inferd.cli.common.fail) imported it
        if typer is not None and isinstance(exc, typer.Exit):
            raise SystemExit(exc.exit_code) from None
        raise
    return True
