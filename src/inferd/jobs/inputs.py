"""Input references: a job whose body is a file (local path, ``file://`` or any fsspec URL) instead of bytes.

Safe by default: a reference is read only when it lies under one of the configured roots
(``INFERD_ASYNC_INPUT_ROOTS``); with none configured every reference is refused. Local paths are resolved
first, so ``..`` and symbolic links cannot leave a root. Other URLs need ``fsspec`` (imported when first
needed) and must start with a configured URL prefix.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inferd.errors import ErrorCode, InferError, invalid


def _local(location: str) -> Path | None:
    if location.startswith("file://"):
        return Path(location.removeprefix("file://"))
    if "://" in location:
        return None
    return Path(location)


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
    resolved = path.resolve()
    for root in roots:
        local_root = _local(root)
        if local_root is not None and resolved.is_relative_to(local_root.resolve()):
            if not resolved.is_file():
                raise invalid(f"input location {location!r} is not a file")
            return str(resolved)
    raise invalid(f"input location {location!r} is not under an allowed root (async_input_roots)")


def location_size(location: str) -> int | None:
    """The size of a local input file (None for other URLs: they are checked when read)."""
    path = _local(location)
    return path.stat().st_size if path is not None else None


async def read_location(location: str, max_bytes: int) -> bytes:
    """The whole input file; INVALID_ARGUMENT when it is missing or too large."""
    return await asyncio.to_thread(_read, location, max_bytes)


def _read(location: str, max_bytes: int) -> bytes:
    path = _local(location)
    try:
        if path is not None:
            with path.open("rb") as f:
                data = f.read(max_bytes + 1)
        else:
            with _fsspec().open(location, "rb") as f:
                data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise invalid(f"input location {location!r} does not exist") from None
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
