"""Payload files: request and result bodies too large to keep inline in the job store.

A body arrives chunk by chunk. :class:`BodyWriter` keeps it in memory while it is small and, once it passes the
inline threshold, writes it (and every later chunk) to a file under ``<state_dir>/payloads/``, so a 1 GB upload
never sits whole in memory. The file is fsynced before the job that names it is committed: the job's 202 means
its body is on disk too. Files have random names, so two uploads of the same idempotency key never collide;
the loser's file is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import uuid
from pathlib import Path
from typing import IO

from inferd.jobs.store import Payload

log = logging.getLogger(__name__)

WRITE_BUFFER = 1024 * 1024
"""Bytes buffered before a write to the file: a large upload costs the event loop one write per MiB."""


class BodyTooLargeError(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is over the limit of {limit} bytes for asynchronous inference")
        self.limit = limit


class PayloadFiles:
    """The folder of payload files. Names are relative to it (what the job store records)."""

    def __init__(self, folder: Path, *, fsync: bool = True) -> None:
        self.folder = folder
        self.fsync = fsync

    def prepare(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.folder / name

    def new_name(self, kind: str) -> str:
        return f"{uuid.uuid4().hex}.{kind}"

    def writer(self, inline_limit: int, max_bytes: int) -> BodyWriter:
        return BodyWriter(self, inline_limit, max_bytes)

    async def read(self, name: str) -> bytes:
        return await asyncio.to_thread(self.path(name).read_bytes)

    async def store(self, data: bytes, inline_limit: int, kind: str) -> Payload:
        """Keep ``data`` inline when small, else write it to a new, synced file."""
        if len(data) <= inline_limit:
            return Payload(len(data), inline=data)
        name = self.new_name(kind)
        await asyncio.to_thread(self._write_all, name, data)
        return Payload(len(data), file=name)

    def _write_all(self, name: str, data: bytes) -> None:
        try:
            with self.path(name).open("wb") as f:
                f.write(data)
                self.sync_file(f)
        except BaseException:  # a full disk, say: no half-written file stays behind
            self.delete([name])
            raise

    def sync_file(self, f: IO[bytes]) -> None:
        if self.fsync:
            f.flush()
            os.fsync(f.fileno())
            sync_folder(self.folder)

    def delete(self, names: list[str] | set[str]) -> None:
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                self.path(name).unlink()

    def names(self) -> set[str]:
        if not self.folder.is_dir():
            return set()
        return {p.name for p in self.folder.iterdir() if p.is_file()}


def sync_folder(folder: Path) -> None:
    """fsync a folder, so that a file just created in it survives a power cut."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BodyWriter:
    """Collects a body: in memory up to ``inline_limit`` bytes, then in a payload file. Computes its SHA-256."""

    def __init__(self, files: PayloadFiles, inline_limit: int, max_bytes: int) -> None:
        self._files = files
        self._inline_limit = inline_limit
        self._max_bytes = max_bytes
        self._chunks: list[bytes] = []
        self._file: IO[bytes] | None = None
        self.name: str | None = None
        self.size = 0
        self.digest = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.size += len(chunk)
        if self.size > self._max_bytes:
            self.discard()
            raise BodyTooLargeError(self._max_bytes)
        self.digest.update(chunk)
        if self._file is not None:
            self._file.write(chunk)
            return
        self._chunks.append(chunk)
        if self.size > self._inline_limit:
            self.name = self._files.new_name("request")
            self._file = self._files.path(self.name).open("wb", buffering=WRITE_BUFFER)
            for kept in self._chunks:
                self._file.write(kept)
            self._chunks = []

    async def finish(self) -> Payload:
        """The body as a payload; a file is flushed and synced (off the event loop) first."""
        if self._file is None:
            return Payload(self.size, inline=b"".join(self._chunks))
        file, self._file = self._file, None
        try:
            await asyncio.to_thread(self._close_synced, file)
        except BaseException:
            self.discard()
            raise
        return Payload(self.size, file=self.name)

    def _close_synced(self, file: IO[bytes]) -> None:
        with file:
            self._files.sync_file(file)

    def discard(self) -> None:
        """Forget the body and delete its file, if any (too large, a client gone, a duplicate id)."""
        self._chunks = []
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        if self.name is not None:
            self._files.delete([self.name])
            self.name = None
