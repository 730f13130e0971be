"""Shared memory segments that carry tensors between the server and its model worker processes.

Why shared memory: sending an array through a pipe pickles it into a buffer, pushes it through the kernel
in pipe-sized chunks and unpickles it on the other side, several copies of every byte with the GIL held.
With a segment mapped in both processes a tensor costs one memcpy on each side, and the pipe carries only
a small description of where each tensor lies (:data:`Meta`).

Layout: tensors are packed one after another, each at a 64-byte aligned offset. A numeric tensor is its
native-endian bytes; a BYTES tensor is the length-prefixed layout of :func:`inferd.tensors.to_raw`.
Whoever reads a segment copies the arrays out, because the segment is reused by the next request.

Ownership: the main process creates every segment (:class:`Segment`), so its resource tracker unlinks
them should the server die, and unlinks each exactly once itself. The tracker is a process of its own that
outlives the server and its workers (which die with the server: see
:func:`inferd.executors.worker.die_with_parent`); it unlinks once every process holding its pipe is gone.
A worker only maps them (:func:`attach`).
On Python < 3.13, ``SharedMemory(name)`` registers even a segment it merely attaches to with the resource
tracker (CPython gh-82300, formerly bpo-38119), as if that process owned it: a tracker then unlinks it, with
a "leaked shared_memory objects" warning, when it shuts down. Spawned workers share the server's tracker,
where a registration landing after the server unlinked the name stays behind as a phantom, and the usual
workaround, unregistering right after attaching, would erase the server's own registration (the tracker then
fails on the server's unlink). So :func:`attach` does not register at all (``track=False`` from 3.13 on).
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import secrets
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

from inferd.tensors import as_bytes_array, datatype_of, from_raw, numpy_dtype, to_raw

PREFIX = "inferd-"
"""Every segment's name starts with this, then the creating process id: ``inferd-<pid>-<random>``."""
MIN_SIZE = 1 << 16
ALIGN = 64

Meta = tuple[str, str, tuple[int, ...], int, int]
"""Where one tensor lies in a segment: name, V2 datatype, shape, offset, nbytes."""


class Segment:
    """A shared memory segment created, and eventually unlinked, by the main process."""

    def __init__(self, size: int = 0) -> None:
        size = _round_up(max(size, MIN_SIZE), mmap.PAGESIZE)
        while True:
            name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
            try:
                self._shm = SharedMemory(name=name, create=True, size=size)
                break
            except FileExistsError:  # pragma: no cover - 48 random bits
                continue
        self.name: str = self._shm.name
        self.size: int = self._shm.size
        self._unlinked = False
        self._unmapped = False
        self._reserve()

    def _reserve(self) -> None:
        """Back every page now. tmpfs grants any size to ftruncate, then kills whoever touches a page past its
        limit with SIGBUS (Docker's /dev/shm is 64 MB by default): better a clean error here."""
        fd = getattr(self._shm, "_fd", -1)
        if fd < 0 or not hasattr(os, "posix_fallocate"):  # pragma: no cover - not Linux
            return
        try:
            os.posix_fallocate(fd, 0, self.size)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # pragma: no cover - a filesystem without it
                return
            self.close()
            if exc.errno != errno.ENOSPC:  # pragma: no cover
                raise
            raise OSError(errno.ENOSPC, f"shared memory has no room for {self.size} bytes; "
                          "give the server a bigger /dev/shm (docker run --shm-size)") from None

    @property
    def buf(self) -> memoryview:
        buf = self._shm.buf
        assert buf is not None, "segment is closed"
        return buf

    def fit(self, needed: int) -> Segment:
        """This segment if ``needed`` bytes fit, else a new one at least twice as big (this one released)."""
        if needed <= self.size:
            return self
        bigger = Segment(max(needed, 2 * self.size))
        self.close()
        return bigger

    def unlink(self) -> None:
        """Remove the name (the memory lives on while mapped). Only the first call does anything."""
        if not self._unlinked:
            self._unlinked = True
            with contextlib.suppress(FileNotFoundError):  # another thread got there first
                self._shm.unlink()

    def close(self) -> None:
        """Unlink and unmap."""
        self.unlink()
        if not self._unmapped:
            self._unmapped = True
            self._shm.close()


def attach(name: str) -> SharedMemory:
    """Map a segment the main process created, without registering it with the resource tracker."""
    if sys.version_info >= (3, 13):  # pragma: no cover - the project runs 3.11 today
        return SharedMemory(name=name, track=False)
    with _no_tracking():
        return SharedMemory(name=name)


@contextlib.contextmanager
def _no_tracking() -> Iterator[None]:
    register = resource_tracker.register

    def skip_shared_memory(name: str, rtype: str) -> None:
        if rtype != "shared_memory":
            register(name, rtype)

    setattr(resource_tracker, "register", skip_shared_memory)  # noqa: B010 - a plain assignment upsets mypy
    try:
        yield
    finally:
        setattr(resource_tracker, "register", register)  # noqa: B010


class Attachment:
    """A worker's mapping of whichever segment the server names now; switching names unmaps the old one."""

    def __init__(self) -> None:
        self._shm: SharedMemory | None = None

    def buf(self, name: str) -> memoryview:
        if self._shm is None or self._shm.name != name:
            self.close()
            self._shm = attach(name)
        buf = self._shm.buf
        assert buf is not None
        return buf

    def close(self) -> None:
        if self._shm is not None:
            self._shm.close()
            self._shm = None


@dataclass(frozen=True, slots=True)
class Packed:
    """One tensor ready to copy into a segment."""

    meta: Meta
    data: np.ndarray | bytes


def pack(arrays: Mapping[str, Any]) -> tuple[list[Packed], int]:
    """Lay tensors out one after another; returns them and the segment size they need.

    Raises ValueError for an array whose dtype has no V2 datatype.
    """
    packed: list[Packed] = []
    offset = 0
    for name, value in arrays.items():
        array = np.asarray(value)
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
        datatype = datatype_of(array.dtype)
        data: np.ndarray | bytes = array
        if datatype == "BYTES":
            if array.dtype != object:
                array = as_bytes_array(array.ravel().tolist()).reshape(array.shape)
            data = to_raw(array)
        nbytes = len(data) if isinstance(data, bytes) else array.nbytes
        packed.append(Packed((str(name), datatype, tuple(array.shape), offset, nbytes), data))
        offset = _round_up(offset + nbytes, ALIGN)
    return packed, offset


def write(buf: memoryview, packed: list[Packed]) -> list[Meta]:
    """Copy packed tensors into a segment big enough for them (one memcpy each)."""
    for item in packed:
        _, datatype, shape, offset, nbytes = item.meta
        if isinstance(item.data, bytes):
            buf[offset:offset + nbytes] = item.data
        elif nbytes:
            target = np.ndarray(shape, dtype=numpy_dtype(datatype), buffer=buf, offset=offset)
            np.copyto(target, item.data, casting="no")
            del target
    return [item.meta for item in packed]


def read(buf: memoryview, metas: list[Any]) -> dict[str, np.ndarray]:
    """Copy tensors described by ``metas`` (as they came off the wire) out of a segment."""
    arrays: dict[str, np.ndarray] = {}
    for name, datatype, shape_list, offset, nbytes in metas:
        shape = tuple(int(d) for d in shape_list)
        if datatype == "BYTES":
            arrays[name] = from_raw(name, datatype, shape, buf[offset:offset + nbytes])
        elif nbytes == 0:
            arrays[name] = np.empty(shape, dtype=numpy_dtype(datatype))
        else:
            view = np.ndarray(shape, dtype=numpy_dtype(datatype), buffer=buf, offset=offset)
            arrays[name] = view.copy()
            del view
    return arrays


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple
