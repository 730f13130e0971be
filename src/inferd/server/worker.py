"""One worker of ``inferd serve --workers N``: the ordinary server, started by the supervisor
(:mod:`inferd.server.supervisor`) as ``python -m inferd.cli.worker`` with its settings as JSON on stdin (never in
its environment or command line: they may hold API key digests).

A worker differs from a lone server only in what :class:`WorkerRole` tells the composition root: bind the ports
with ``SO_REUSEPORT`` (the supervisor reserved them), share the SQLite job store with its siblings (the supervisor
holds the state folder's lock and requeues the jobs of a worker that died), answer its siblings' metrics requests
on a Unix socket in the supervisor's folder, and stop when the supervisor is gone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPLACEMENTS_FILE = "replacements"
"""In the supervisor's folder: how many workers it has replaced (absent: none)."""
EXIT_CANNOT_SERVE = 2
"""A worker that cannot start (settings, security files, a port): the supervisor stops rather than retry."""


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """What makes a server process one worker of several."""

    index: int
    """0 to N-1; a replacement takes the index of the worker it replaces (the ``process`` label of /metrics)."""
    folder: Path
    """The supervisor's folder: one Unix socket per live worker, for metrics of the whole server."""
    supervisor_pid: int
    """The worker stops when its parent is no longer this process."""
    shared_state: bool = False
    """The supervisor holds the SQLite state folder for the workers (they share its job store)."""

    @property
    def name(self) -> str:
        """How the job store knows this worker's claims: its process id (unique among live workers)."""
        return str(os.getpid())

    def replacements(self) -> int:
        """Workers the supervisor replaced so far."""
        try:
            return int((self.folder / REPLACEMENTS_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return 0

    def socket_path(self, pid: int | None = None) -> Path:
        return self.folder / f"worker-{os.getpid() if pid is None else pid}.sock"
