"""A full disk under the state folder: recognising it, and what a submitter is told.

Asynchronous inference writes to the state folder (the job store and payload files) on every submission and
every result. When the disk fills up, SQLite reports ``SQLITE_FULL`` ("database or disk is full") and file
writes ``ENOSPC``; both become UNAVAILABLE with ``Retry-After`` (HTTP 503), naming the folder. 503 rather than
507: the V2 protocol and Triton answer 503 for "cannot take this now", SageMaker's runtime API calls it
ServiceUnavailable, and the clients those users run (botocore's retry modes, urllib3's ``Retry``, load balancers)
back off and retry a 503 and honour its ``Retry-After``, where 507 is a WebDAV status they treat as a final
failure. Real-time inference goes on meanwhile, and the worker waits the disk out (see
:mod:`inferd.jobs.worker`), so nothing needs a restart once space is freed.
"""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

from inferd.errors import ErrorCode, InferError

SQLITE_FULL = 13
"""SQLite's primary result code for a full disk (extended codes keep it in their low byte)."""
RETRY_AFTER_S = 5
"""Retry-After of a submission refused for a full disk: freeing space takes an operator, not a millisecond."""


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the user's quota) is full."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return (code is not None and code & 0xFF == SQLITE_FULL) or "database or disk is full" in str(exc)
    return False


def disk_full_error(folder: Path, exc: BaseException) -> InferError:
    """UNAVAILABLE with Retry-After, naming the state folder and what failed."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return InferError(ErrorCode.UNAVAILABLE,
                      f"the state folder {folder} is out of disk space ({reason}): asynchronous jobs cannot be "
                      "stored until space is freed there (real-time inference is unaffected)",
                      retry_after_s=RETRY_AFTER_S)
