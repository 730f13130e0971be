"""A full disk under the state folder is recognised from SQLite's and the OS's own errors and answered 503 with
Retry-After, naming the folder (see inferd.jobs.storage for why 503, not 507)."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import orjson
import pytest

from inferd.errors import ErrorCode
from inferd.jobs.storage import RETRY_AFTER_S, disk_full_error, is_disk_full
from inferd.server.rest.errors import failure_parts


def real_sqlite_full(tmp_path: Path) -> sqlite3.Error:
    """SQLite's own "database or disk is full": a database that may not grow past its current pages."""
    conn = sqlite3.connect(tmp_path / "full.db")
    try:
        conn.execute("CREATE TABLE t (x BLOB)")
        conn.execute("PRAGMA max_page_count = 2")
        with pytest.raises(sqlite3.Error) as caught:
            conn.execute("INSERT INTO t VALUES (?)", (b"x" * 65536,))
        return caught.value
    finally:
        conn.close()


def test_sqlites_full_disk_and_enospc_are_recognised(tmp_path):
    full = real_sqlite_full(tmp_path)
    assert str(full) == "database or disk is full"
    assert is_disk_full(full)
    assert is_disk_full(sqlite3.OperationalError("database or disk is full"))  # one without an error code
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    for other in (sqlite3.OperationalError("database is locked"), OSError(errno.EIO, "Input/output error"),
                  OSError(errno.EACCES, "Permission denied"), ValueError("database or disk is full")):
        assert not is_disk_full(other), other


@pytest.mark.parametrize("kind", ["sqlite", "enospc"])
def test_a_full_disk_is_503_with_retry_after_naming_the_state_folder(tmp_path, kind):
    cause = real_sqlite_full(tmp_path) if kind == "sqlite" else OSError(errno.ENOSPC, "No space left on device")
    error = disk_full_error(Path("/srv/inferd-state"), cause)
    assert (error.code, error.retry_after_s) == (ErrorCode.UNAVAILABLE, RETRY_AFTER_S)
    status, headers, body = failure_parts(error)
    assert status == 503
    assert (b"retry-after", str(RETRY_AFTER_S).encode()) in [(k.lower(), v) for k, v in headers]
    message = orjson.loads(body)["error"]
    assert message.startswith("the state folder /srv/inferd-state is out of disk space (")
    assert ("database or disk is full" if kind == "sqlite" else "No space left on device") in message
