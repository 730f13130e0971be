"""Input references: a job whose body is a file (local path, ``file://`` or any fsspec URL) instead of bytes.

Safe by default: a reference is read only when it lies under one of the configured roots
(``INFERD_ASYNC_INPUT_ROOTS``); with none configured every reference is refused. Local paths are resolved
and checked at submission, and checked again on the file the job opens (:mod:`inferd.roots`), so neither
``..`` nor a symbolic link, not even one swapped in after submission, can leave a root. Other URLs need
``fsspec`` (imported when first needed) and must start with a configured URL prefix.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inferd.errors import ErrorCode, InferError, invalid
from inferd.roots import OutsideRootsError, Roots

SETTING = "async_input_roots"


def _local(location: str) -> Path | None:
    if location.startswith("file://"):
        return Path(location.removeprefix("file://"))
    if "://" in location:
        return None
    return Path(location)


def local_roots(roots: Sequence[str]) -> Roots:
    """The local folders among ``roots`` (the others are URL prefixes)."""
    return Roots.of([path for root in roots if (path := _local(root)) is not None], SETTING)


def check_location(location: str, roots: Sequence[str]) -> str:
    """The location to store for a job, or INVALID_ARGUMENT saying why it may not be read."""
    if not roots:
        raise invalid("input references are off: set INFERD_ASYNC_INPUT_ROOTS (async_input_roots) to the "
                      "folders or URL prefixes the server may read")
    path = _local(location)
    if path is None:
        if not any("://" in root and location.startswith(root.rstrip("/") + "/") for root in roots):
            raise invalid(f"input location {location!r} is not under an allowed root (async_input_roots)")
        _fsspec()  # refuse now, not when the job runs, if it cannot be read
        return location
    if not path.is_absolute():
        raise invalid(f"input location {location!r} must be an absolute path")
    try:
        resolved = local_roots(roots).check(path, "input location")
    except OutsideRootsError as exc:
        raise invalid(exc.message) from None
    if not resolved.is_file():
        raise invalid(f"input location {location!r} is not a file")
    return str(resolved)


def location_size(location: str) -> int | None:
    """The size of a local input file (None for other URLs: they are checked when read)."""
    path = _local(location)
    return path.stat().st_size if path is not None else None


async def read_location(location: str, max_bytes: int, roots: Roots) -> bytes:
    """The whole input file; INVALID_ARGUMENT when it is missing, too large or (a local file) not under
    ``roots`` as opened now."""
    return await asyncio.to_thread(_read, location, max_bytes, roots)


def _read(location: str, max_bytes: int, roots: Roots) -> bytes:
    path = _local(location)
    try:
        if path is not None:
            with roots.open_file(path, "input location") as f:
                data = f.read(max_bytes + 1)
        else:
            with _fsspec().open(location, "rb") as f:
                data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise invalid(f"input location {location!r} does not exist") from None
    except OutsideRootsError as exc:
        raise invalid(exc.message) from None
    except OSError as exc:
        raise InferError(ErrorCode.UNAVAILABLE, f"cannot read input location {location!r}: {exc}") from None
    if len(data) > max_bytes:
        raise invalid(f"input location {location!r} is over the limit of {max_bytes} bytes")
    return data


def _fsspec() -> Any:
    try:
        import fsspec  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        raise invalid("reading URLs other than local files needs fsspec (pip install fsspec, plus the package "
                      "for the URL's scheme, such as s3fs)") from None
    return fsspec
