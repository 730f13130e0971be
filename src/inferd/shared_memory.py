"""System shared memory (Triton's extension): tensors that travel through POSIX shared memory objects instead of
request and response bodies.

A client creates an object (``shm_open``: ``/dev/shm/<key>``), registers part of it as a named region (key,
offset, byte size), and names the region in a tensor's parameters: ``shared_memory_region``,
``shared_memory_byte_size`` and, optionally, ``shared_memory_offset`` (into the region). An input is then read
from the region; an output is written into it, and the response carries its datatype and shape but no data.

Regions belong to whoever registered them: the API key's name, or one namespace for everyone when the server has
no keys. A caller names only its own regions; another key's region of the same name is a different region.

The registry reads and writes with ``pread``/``pwrite`` on a descriptor it keeps open while the region is
registered, not through a memory map. A client can shrink its object after registering it, and touching a map
past the end of its file is a SIGBUS that takes the whole server down; a read past the end only comes up short,
which fails that one request. Each read is one copy (the model gets an array of its own, which a client writing
the region again cannot change under it); each write is one copy.

Every offset and size is checked against the region before anything is read or written: nothing outside a
region is ever touched.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from inferd.errors import ErrorCode, InferError, invalid, not_found

REGION = "shared_memory_region"
OFFSET = "shared_memory_offset"
BYTE_SIZE = "shared_memory_byte_size"
PARAMETERS = (REGION, OFFSET, BYTE_SIZE)
"""The tensor parameters of the extension, over HTTP and gRPC alike."""

NO_KEY = ""
"""The owner of every region on a server without API keys."""

MAX_REGIONS = 256
"""Most regions registered at once (over all owners): each holds a file descriptor."""

SHM_ROOT = "/dev/shm"
"""Where POSIX shared memory objects live on Linux (``shm_open("/name")`` is ``/dev/shm/name``)."""

CUDA_REFUSAL = ("CUDA shared memory is not supported: this server has no GPU (it serves system shared memory: "
                "register the region with /v2/systemsharedmemory)")


@dataclass(frozen=True, slots=True)
class RegionStatus:
    """A registered region, as the status calls describe it."""

    name: str
    key: str
    offset: int
    byte_size: int


@dataclass(frozen=True, slots=True)
class Location:
    """Where a tensor is in shared memory: ``byte_size`` bytes at ``offset`` into a region."""

    region: str
    offset: int
    byte_size: int


def tensor_location(kind: str, name: str, parameters: Mapping[str, Any]) -> Location | None:
    """The shared memory location a tensor's parameters give (``kind``: input or output, for messages); None when
    they name no region. INVALID_ARGUMENT for a malformed one (a byte size without a region is one)."""
    region = parameters.get(REGION)
    if region is None:
        if BYTE_SIZE in parameters or OFFSET in parameters:
            raise invalid(f"{kind} {name!r}: {BYTE_SIZE} and {OFFSET} need a {REGION} parameter naming the region")
        return None
    if type(region) is not str or not region:
        raise invalid(f"{kind} {name!r}: {REGION} must be the name of a registered region, got {region!r}")
    if BYTE_SIZE not in parameters:
        raise invalid(f"{kind} {name!r}: {REGION} {region!r} needs a {BYTE_SIZE} parameter")
    size = _count(kind, name, BYTE_SIZE, parameters[BYTE_SIZE])
    offset = _count(kind, name, OFFSET, parameters.get(OFFSET, 0))
    return Location(region, offset, size)


def _count(kind: str, name: str, key: str, value: Any) -> int:
    if type(value) is not int or value < 0:
        raise invalid(f"{kind} {name!r}: {key} must be a non-negative integer, got {value!r}")
    return value


class _Region:
    """One registered region: its descriptor, open until it is unregistered. Reads and writes hold the lock, and
    so does closing: a descriptor is never used after close (when its number may name another file)."""

    __slots__ = ("_fd", "_lock", "status")

    def __init__(self, status: RegionStatus, fd: int) -> None:
        self.status = status
        self._fd = fd
        self._lock = threading.Lock()

    def check(self, where: str, location: Location) -> None:
        """INVALID_ARGUMENT, naming the region, unless ``location`` lies within it (every read and write is
        checked by whoever found the region, :meth:`SharedMemoryRegistry.find`)."""
        size = self.status.byte_size
        if location.offset >= size:
            raise invalid(f"{where}: offset {location.offset} is past the end of shared memory region "
                          f"{location.region!r} ({size} bytes)")
        if location.offset + location.byte_size > size:
            raise invalid(f"{where}: {location.byte_size} bytes at offset {location.offset} do not fit in shared "
                          f"memory region {location.region!r} ({size} bytes)")

    def read(self, where: str, location: Location) -> bytes:
        """The bytes at ``location`` (checked already)."""
        with self._lock:
            if self._fd < 0:
                raise _gone(where, location.region)
            data = os.pread(self._fd, location.byte_size, self.status.offset + location.offset)
        if len(data) != location.byte_size:
            raise invalid(f"{where}: only {len(data)} of {location.byte_size} bytes could be read from shared memory "
                          f"region {location.region!r}: its object {self.status.key!r} was made smaller")
        return data

    def write(self, where: str, location: Location, data: bytes) -> None:
        """Write ``data`` at ``location`` (checked already); INVALID_ARGUMENT when it is larger."""
        if len(data) > location.byte_size:
            raise invalid(f"{where} has {len(data)} bytes, more than the {location.byte_size} bytes given for it "
                          f"in shared memory region {location.region!r} ({BYTE_SIZE})")
        start = self.status.offset + location.offset
        with self._lock:
            if self._fd < 0:
                raise _gone(where, location.region)
            view = memoryview(data)
            while view:  # pwrite on tmpfs writes it all at once; a partial write is only continued
                view = view[os.pwrite(self._fd, view, start + len(data) - len(view)):]

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def _gone(where: str, region: str) -> InferError:
    return invalid(f"{where}: shared memory region {region!r} was unregistered while the request was running")


class SharedMemoryRegistry:
    """The system shared memory regions registered with the server, by owner and name."""

    def __init__(self, root: str = SHM_ROOT, max_regions: int = MAX_REGIONS) -> None:
        self.root = root
        self.max_regions = max_regions
        self._regions: dict[tuple[str, str], _Region] = {}
        self._lock = threading.Lock()
        self.shared = Regions(self, NO_KEY)
        """The regions of a caller without a key (the only namespace of a server without keys)."""

    def register(self, owner: str, name: str, key: str, offset: int, byte_size: int) -> None:
        """Register ``byte_size`` bytes at ``offset`` of the shared memory object ``key`` as region ``name``.
        INVALID_ARGUMENT for a bad key or a range past the object's end, FAILED_PRECONDITION for a name taken,
        RESOURCE_EXHAUSTED past :data:`MAX_REGIONS`."""
        if not name:
            raise invalid("a shared memory region needs a name to be registered under")
        if type(offset) is not int or type(byte_size) is not int or offset < 0 or byte_size <= 0:
            raise invalid(f"failed to register shared memory region {name!r}: offset must be a non-negative and "
                          f"byte_size a positive integer, got offset {offset!r} and byte_size {byte_size!r}")
        path = self._path(name, key)
        with self._lock:
            if (owner, name) in self._regions:
                raise InferError(ErrorCode.FAILED_PRECONDITION, f"shared memory region {name!r} already in manager: "
                                 "unregister it first, or register under another name")
            if len(self._regions) >= self.max_regions:
                raise InferError(ErrorCode.RESOURCE_EXHAUSTED, f"{self.max_regions} shared memory regions are "
                                 "registered already, the most the server holds: unregister some first")
            fd = _open(name, key, path, offset + byte_size)
            self._regions[owner, name] = _Region(RegionStatus(name, key, offset, byte_size), fd)

    def unregister(self, owner: str, name: str = "") -> None:
        """Unregister the owner's region ``name``, or all of its regions when ``name`` is empty. A name that is not
        registered is nothing to do, as in Triton."""
        with self._lock:
            if name:
                gone = [self._regions.pop((owner, name))] if (owner, name) in self._regions else []
            else:
                gone = [self._regions.pop(k) for k in [k for k in self._regions if k[0] == owner]]
        for region in gone:
            region.close()

    def status(self, owner: str, name: str = "") -> list[RegionStatus]:
        """The owner's regions (the one named, or all); NOT_FOUND for a name it has not registered."""
        with self._lock:
            if not name:
                return [r.status for (o, _), r in sorted(self._regions.items()) if o == owner]
            region = self._regions.get((owner, name))
        if region is None:
            raise not_found(f"Unable to find system shared memory region: {name!r}")
        return [region.status]

    def caller(self, owner: str | Callable[[], str]) -> Regions:
        """The regions of one caller: ``owner`` is its key's name, or a function that tells it when a request
        names a region (so that requests without any pay nothing to find out)."""
        return self.shared if owner == NO_KEY else Regions(self, owner)

    def close(self) -> None:
        """Unregister everything (the server stops)."""
        with self._lock:
            gone = list(self._regions.values())
            self._regions.clear()
        for region in gone:
            region.close()

    def find(self, owner: str, where: str, location: Location) -> _Region:
        region = self._regions.get((owner, location.region))
        if region is None:
            raise invalid(f"{where}: no shared memory region {location.region!r} is registered"
                          f"{' for this API key' if owner else ''}; register it first")
        region.check(where, location)
        return region

    def _path(self, name: str, key: str) -> str:
        """The object's file: a POSIX shared memory name is one path component, with an optional leading '/'."""
        base = key[1:] if isinstance(key, str) and key.startswith("/") else key
        if not isinstance(base, str) or not base or "/" in base or "\0" in base or base in (".", "..") \
                or len(base) > 255:
            raise invalid(f"failed to register shared memory region {name!r}: key {key!r} is not the name of a POSIX "
                          "shared memory object (such as '/input_data': one name, no other '/')")
        return os.path.join(self.root, base)


def _open(name: str, key: str, path: str, end: int) -> int:
    """A descriptor of the shared memory object at ``path``, which must be a regular file of at least ``end``
    bytes; INVALID_ARGUMENT otherwise."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise invalid(f"failed to register shared memory region {name!r}: unable to open shared memory object "
                      f"{key!r}: {exc.strerror}") from None
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):
            raise invalid(f"failed to register shared memory region {name!r}: {key!r} is not a shared memory object")
        if found.st_size < end:
            raise invalid(f"failed to register shared memory region {name!r}: offset + byte_size is {end} bytes, "
                          f"past the end of shared memory object {key!r} ({found.st_size} bytes)")
    except BaseException:
        os.close(fd)
        raise
    return fd


class Regions:
    """The regions one caller may name: reads its inputs, and the places of its outputs."""

    __slots__ = ("_owner", "_registry")

    def __init__(self, registry: SharedMemoryRegistry, owner: str | Callable[[], str]) -> None:
        self._registry = registry
        self._owner = owner

    def owner(self) -> str:
        if not isinstance(self._owner, str):
            self._owner = self._owner()
        return self._owner

    def read(self, name: str, location: Location) -> bytes:
        """The bytes of input ``name`` at ``location``; INVALID_ARGUMENT naming the region when it is not this
        caller's or the range does not fit in it."""
        where = f"input {name!r}"
        return self._registry.find(self.owner(), where, location).read(where, location)

    def output(self, name: str, location: Location) -> SharedOutput:
        """Where output ``name`` goes, checked now (before the model runs)."""
        where = f"output {name!r}"
        return SharedOutput(where, location, self._registry.find(self.owner(), where, location))


@dataclass(frozen=True, slots=True)
class SharedOutput:
    """An output to write into a region once the model has run."""

    where: str
    location: Location
    region: _Region

    def write(self, data: bytes) -> None:
        """INVALID_ARGUMENT when ``data`` is larger than the byte size given for it."""
        self.region.write(self.where, self.location, data)
