"""A throw-away PostgreSQL cluster for the tests: ``initdb`` into a temporary folder, ``postgres`` on a free loopback
port, stopped by its process id.

PostgreSQL refuses to run as root, and the tests (and CI) run as root: the cluster then runs as ``nobody``
(through ``setpriv``), in a folder of its own outside pytest's temporary folders (those are private to root).
The binaries come from Debian's ``postgresql`` package (scripts/system_deps.sh installs it). Without them the
tests that need the cluster skip, saying so; under CI (``CI=true``) they fail instead, so a missing install step
cannot pass as green.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

USER = "inferd"
"""The cluster's superuser (trust authentication on loopback: a test cluster only)."""


SPEED = ["-c", "fsync=off", "-c", "full_page_writes=off"]
"""A test cluster's data need not survive the machine: without fsync, creating a database per test and stopping
the cluster take no disk syncs. Commits still wait for the WAL write (``synchronous_commit`` is on), so a killed
``postgres`` loses nothing the tests were told was committed; only a power cut would."""


def find_bin_dir() -> Path | None:
    """The folder with ``initdb`` and ``postgres``: $INFERD_PG_BIN, Debian's versioned folders, or PATH."""
    candidates = [os.environ.get("INFERD_PG_BIN", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    which = shutil.which("initdb")
    candidates.append(str(Path(which).parent) if which else "")
    for folder in filter(None, candidates):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "postgres").exists():
            return Path(folder)
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    def __init__(self, bin_dir: Path, *, durable: bool = False) -> None:
        """``durable``: fsync as in production (benchmarks); else :data:`SPEED`'s settings (tests)."""
        self.bin_dir = bin_dir
        self.speed = [] if durable else SPEED
        self.folder = Path(tempfile.mkdtemp(prefix="inferd-pg-"))
        self.data = self.folder / "data"
        self.log_path = self.folder / "postgres.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._as_user: list[str] = []
        if os.geteuid() == 0:  # postgres will not run as root
            nobody = pwd.getpwnam("nobody")
            os.chown(self.folder, nobody.pw_uid, nobody.pw_gid)
            self._as_user = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        subprocess.run([*self._as_user, str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", USER,
                        "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"],
                       check=True, capture_output=True, timeout=120)

    def start(self, timeout: float = 60) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*self._as_user, str(self.bin_dir / "postgres"), "-D", str(self.data), "-k", str(self.folder),
                 "-h", "127.0.0.1", "-p", str(self.port), "-c", "max_connections=200", *self.speed],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}: {self.log_tail()}")
            with contextlib.suppress(Exception):
                import psycopg

                with psycopg.connect(self.dsn(), connect_timeout=2):
                    return
            time.sleep(0.1)
        raise RuntimeError(f"postgres did not start in {timeout} s: {self.log_tail()}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> None:
        """SIGINT: PostgreSQL's fast shutdown (sessions are disconnected); SIGKILL: a crash."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def new_database(self) -> str:
        """A fresh, empty database; its DSN."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def remove(self) -> None:
        self.stop(signal.SIGQUIT)  # immediate shutdown: the cluster is thrown away
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One cluster for the whole run; tests take a database of their own with :meth:`PostgresCluster.new_database`."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        message = ("PostgreSQL's initdb and postgres were not found (Debian: apt-get install postgresql; or set "
                   "INFERD_PG_BIN)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; CI must have them (scripts/system_deps.sh installs them)")
        pytest.skip(message)
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'inferd[postgres]')")
    cluster = PostgresCluster(bin_dir)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def postgres_dsn(postgres_cluster: PostgresCluster) -> str:
    return postgres_cluster.new_database()
