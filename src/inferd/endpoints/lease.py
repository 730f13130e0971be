"""Which server process drives a rollout: a lease in the store, renewed by its owner, taken over when it lapses.

Several processes may share one state folder (``inferd serve --workers N``, or replicas on one host): each
follows the endpoint store, but exactly one drives each rollout, the one whose name is in the rollout's row. It
renews its lease every :data:`RENEW_S`; a process that sees a running rollout whose lease ran out (its owner
died without a word, or stopped and released it), or whose owner is a process of this host that no longer
exists, takes it over. The one that takes it over rolls it back: the bake window's statistics lived in the
owner's memory, so nothing in the new owner justifies the next step (see docs/endpoints.md).
"""

from __future__ import annotations

import os
import socket
import time
import uuid

from inferd.endpoints.store import RolloutRow

LEASE_S = 5.0
"""How long a lease holds without renewal: a killed owner's rollout is taken over this long after its last
renewal (at once by a process on the same host, which sees the owner's process is gone)."""
RENEW_S = 1.0


def new_owner() -> str:
    """This process's name in the store: host, pid, and a token (a restarted container's pid 1 is another owner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lapsed(row: RolloutRow, me: str, now: float | None = None) -> bool:
    """Whether a running rollout's owner is gone: its lease ran out, or it is a process of this host that no
    longer runs (not this one)."""
    if row.owner == me:
        return False
    if row.owner is None or row.lease_until is None or row.lease_until < (time.time() if now is None else now):
        return True
    return not _alive_here(row.owner, me)


def _alive_here(owner: str, me: str) -> bool:
    """False for an owner on this host whose process is gone; True when it runs, or lives on another host."""
    host, _, rest = owner.partition(":")
    pid_text, _, _ = rest.partition(":")
    my_host, _, my_rest = me.partition(":")
    if host != my_host or not pid_text.isdigit():
        return True
    pid = int(pid_text)
    if str(pid) == my_rest.partition(":")[0]:  # this pid is this process: the owner was an earlier one
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
