"""The entry of one worker of ``inferd serve --workers N`` (``python -m inferd.cli.worker``, started by
:mod:`inferd.server.supervisor`): read the settings and the :class:`~inferd.server.worker.WorkerRole` from
stdin, configure logging as ``inferd serve`` does, and serve."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from inferd.server.worker import EXIT_CANNOT_SERVE, WorkerRole


def main() -> None:
    """Read ``{"settings": ..., "index": ..., "folder": ..., "supervisor": ..., "shared_state": ...}`` from stdin
    and serve until stopped (the supervisor's pid comes from it, not from ``getppid``: a supervisor killed before
    this process looked would leave it watching init)."""
    from inferd.cli.common import configure_logging
    from inferd.security.startup import SecurityConfigError
    from inferd.server.grpc.server import GrpcBindError
    from inferd.server.http.server import PortInUseError
    from inferd.server.runner import run_until_stopped, serve
    from inferd.settings import ServerSettings

    given = json.loads(sys.stdin.buffer.read())
    settings = ServerSettings(**given["settings"])
    role = WorkerRole(int(given["index"]), Path(given["folder"]), int(given["supervisor"]),
                      bool(given["shared_state"]))
    configure_logging(settings.log_level, settings.log_format)
    try:
        run_until_stopped(serve(settings, worker=role))
    except (SecurityConfigError, PortInUseError, GrpcBindError) as exc:  # any other failure: restarted
        print(f"error: worker {role.index} cannot serve: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CANNOT_SERVE) from None
    except KeyboardInterrupt:  # a Ctrl-C reaches the whole process group; the supervisor says what happens
        pass


if __name__ == "__main__":
    main()
