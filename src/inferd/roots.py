"""Allowed roots: the folders a caller may have the server read and write (``batch_roots``,
``async_input_roots``), and the one check every such read and write goes through.

Checking a path's name before it is opened is not enough: between the check and the open, a folder or file
under the root can be swapped for a symbolic link to anywhere (time of check to time of use). So the check is
made on what was opened: a file or folder is opened (links followed, as the kernel does), then the kernel is
asked where the open descriptor really is (``/proc/self/fd`` on Linux, ``F_GETPATH`` on macOS) and it is
refused unless that lies under a root. A symbolic link that stays inside the roots therefore works; one that
leads out is refused, whenever it appeared. Writes are made inside a folder descriptor checked that way, with
the final name created ``O_NOFOLLOW`` (never through a link) and renamed within that same folder, so nothing
is created outside the roots either. Folders to create are made one level at a time, each inside a checked one.

:data:`ANYWHERE` is the same code without the check, for the command line (``inferd batch run``), whose user
may read and write whatever they can.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class OutsideRootsError(Exception):
    """A path that leads outside the allowed roots (or through a link where none may be); the message names the
    path, where it leads and the setting."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Roots:
    folders: tuple[Path, ...]
    """Resolved (symbolic links in the roots themselves are followed once, when the setting is read)."""
    setting: str
    """The setting that lists them, named in every refusal."""
    restricted: bool = True

    @classmethod
    def of(cls, folders: Iterable[str | Path], setting: str) -> Roots:
        return cls(tuple(Path(f).resolve() for f in folders), setting)

    # -- checks --------------------------------------------------------------------------------------
    def allows(self, path: Path) -> bool:
        """Whether a resolved path lies under a root."""
        return not self.restricted or any(path.is_relative_to(root) for root in self.folders)

    def check(self, path: str | Path, what: str = "path") -> Path:
        """``path`` resolved, or :class:`OutsideRootsError` when that is outside the roots. A check of the name
        only: what is then opened is checked again by :meth:`open`."""
        resolved = Path(path).resolve()
        if not self.allows(resolved):
            raise self._outside(what, path, resolved)
        return resolved

    def check_open(self, fd: int, path: str | Path, what: str = "file") -> None:
        """Refuse an open descriptor (``fd``, opened as ``path``) that is not under the roots."""
        if not self.restricted:
            return
        real = _where(fd, Path(path))
        if not self.allows(real):
            raise self._outside(what, path, real)

    def _outside(self, what: str, path: str | Path, real: Path) -> OutsideRootsError:
        listed = ", ".join(str(r) for r in self.folders) or "none"
        leads = "" if Path(path) == real else f" leads to {real}, which is"
        return OutsideRootsError(f"{what} {path}{leads} outside the folders the {self.setting} setting allows "
                                 f"({listed})")

    # -- reads ---------------------------------------------------------------------------------------
    def open(self, path: str | Path, flags: int = os.O_RDONLY, what: str = "file") -> int:
        """``os.open`` and :meth:`check_open`: a descriptor under the roots (closed again when it is not)."""
        try:
            fd = os.open(path, flags | _CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ELOOP and flags & _NOFOLLOW:
                raise OutsideRootsError(f"{what} {path} is a symbolic link; it is not followed "
                                        f"(under {self.setting})") from None
            raise
        try:
            self.check_open(fd, path, what)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def open_file(self, path: str | Path, what: str = "file") -> BinaryIO:
        """A checked file, open for reading."""
        return os.fdopen(self.open(path, os.O_RDONLY, what), "rb")

    def read_bytes(self, path: str | Path, what: str = "file") -> bytes:
        with self.open_file(path, what) as handle:
            return handle.read()

    @contextlib.contextmanager
    def folder(self, path: str | Path) -> Iterator[int]:
        """A checked folder's descriptor, for the ``dir_fd`` of the calls that create and rename in it."""
        fd = self.open(path, os.O_RDONLY | _DIRECTORY, "folder")
        try:
            yield fd
        finally:
            os.close(fd)

    # -- writes --------------------------------------------------------------------------------------
    def makedirs(self, path: str | Path) -> None:
        """``mkdir -p`` inside the roots: each missing folder is made inside a checked one, never through a
        symbolic link."""
        target = Path(os.path.abspath(path))
        missing: list[str] = []
        existing = target
        while not existing.is_dir() and existing != existing.parent:
            missing.append(existing.name)
            existing = existing.parent
        fd = self.open(existing, os.O_RDONLY | _DIRECTORY, "folder")
        try:
            for name in reversed(missing):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o777, dir_fd=fd)
                try:
                    inner = os.open(name, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=fd)
                except OSError as exc:
                    raise self._not_a_folder(existing / name, exc) from None
                os.close(fd)
                fd, existing = inner, existing / name
        finally:
            os.close(fd)

    def _not_a_folder(self, path: Path, exc: OSError) -> Exception:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):
            return OutsideRootsError(f"folder {path} is a symbolic link to {os.readlink(path)}; a folder to "
                                     f"create is not followed through a link (under {self.setting})")
        return exc

    def create(self, folder: int, name: str) -> BinaryIO:
        """A new, empty file ``name`` in the checked ``folder`` (a file or link already there is replaced, never
        followed), open for writing."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=folder)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
        return os.fdopen(os.open(name, flags, 0o666, dir_fd=folder), "wb")

    def replace(self, source: Path, destination: Path) -> None:
        """Rename ``source`` to ``destination``, in the one checked folder both are in."""
        with self.folder(destination.parent) as fd:
            os.replace(source.name, destination.name, src_dir_fd=fd, dst_dir_fd=fd)

    def unlink(self, path: Path) -> None:
        """Delete a file (or link: never what it points to), when it is there."""
        with contextlib.suppress(FileNotFoundError), self.folder(path.parent) as fd:
            os.unlink(path.name, dir_fd=fd)

    def remove_tree(self, path: Path, missing_ok: bool = True) -> None:
        """Delete a folder and what is in it, inside the roots; a symbolic link in its place is refused."""
        try:
            with self.folder(path.parent) as fd:
                shutil.rmtree(path.name, dir_fd=fd)
        except FileNotFoundError:
            if not missing_ok:
                raise
        except OSError:
            if os.path.islink(path):
                raise OutsideRootsError(f"folder {path} is a symbolic link; it is not followed "
                                        f"(under {self.setting})") from None
            raise


ANYWHERE = Roots((), "", restricted=False)
"""No roots: every path is allowed (the command line's own jobs)."""


def _where(fd: int, opened_as: Path) -> Path:
    """Where an open descriptor is, as the kernel knows it."""
    if sys.platform == "darwin":  # pragma: no cover - macOS
        import fcntl

        return Path(os.fsdecode(fcntl.fcntl(fd, fcntl.F_GETPATH, bytes(1024)).rstrip(b"\0")))
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:  # pragma: no cover - no /proc: the resolved name, if it is still the file opened
        real = Path(os.path.realpath(opened_as))
        opened, named = os.fstat(fd), os.stat(real)
        if (opened.st_dev, opened.st_ino) != (named.st_dev, named.st_ino):
            raise OutsideRootsError(f"{opened_as} changed while it was opened") from None
        return real
