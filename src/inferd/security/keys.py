"""API keys: random tokens that only their holders know; the server stores the sha256 of each.

A keys file (``INFERD_API_KEYS_FILE``, TOML or JSON) holds records, each a name, the hex sha256 of the key and
its scopes::

    [[keys]]
    name = "ci"
    sha256 = "5e88...c1d"
    scopes = ["infer", "read"]

JSON takes the same records as ``{"keys": [...]}`` or a bare list, which is also the form of the
``INFERD_API_KEYS`` environment variable. ``inferd keys create`` makes a key and its record.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from inferd.security.scopes import Scope

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class KeysError(ValueError):
    """A keys file or variable that cannot be used; the message names where and what."""


class ApiKey(BaseModel):
    """One key's record: never the key itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    """Who holds the key; shown in refusals and logs instead of the key."""
    sha256: str
    """Lower-case hex sha256 of the key's UTF-8 bytes."""
    scopes: frozenset[Scope]
    """What the key may do: ``infer``, ``read``, ``admin``."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"name {value!r}: use 1-64 letters, digits, '.', '_', '@' or '-'")
        return value

    @field_validator("sha256")
    @classmethod
    def _digest(cls, value: str) -> str:
        if not _HEX64.match(value):
            raise ValueError("sha256 must be 64 lower-case hex digits (the digest of the key, not the key)")
        return value

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: frozenset[Scope]) -> frozenset[Scope]:
        if not value:
            raise ValueError("give at least one scope: infer, read or admin")
        return value

    def to_record(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "scopes": sorted(s.value for s in self.scopes)}


def new_key() -> str:
    """A new random key: 32 bytes from the OS's generator, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def hash_key(key: str | bytes) -> str:
    """The hex sha256 stored for ``key``."""
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).hexdigest()


def parse_records(raw: Any, source: str) -> list[ApiKey]:
    """Records from decoded JSON or TOML (a list, or a mapping with a ``keys`` list). Errors name ``source``
    and the record's position and field; names must be unique and so must keys."""
    entries = raw.get("keys") if isinstance(raw, dict) else raw
    if not isinstance(entries, list):
        raise KeysError(f"{source}: expected a list of key records under 'keys'")
    keys: list[ApiKey] = []
    for index, entry in enumerate(entries):
        try:
            keys.append(ApiKey.model_validate(entry))
        except ValidationError as exc:
            raise KeysError(f"{source}: keys[{index}]: {_first_error(exc)}") from None
    _check_unique(keys, source)
    return keys


def load_keys_file(path: Path) -> list[ApiKey]:
    """The records of a TOML (or, by its ``.json`` suffix, JSON) keys file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeysError(f"API keys file {path}: cannot read it: {exc.strerror or exc}") from None
    try:
        raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise KeysError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from None
    return parse_records(raw, str(path))


def load_keys(path: Path | None, records: list[ApiKey]) -> list[ApiKey]:
    """Every configured key: the file's, then those given directly (``INFERD_API_KEYS``)."""
    keys = load_keys_file(path) if path is not None else []
    keys += records
    _check_unique(keys, f"{path} and INFERD_API_KEYS" if path is not None else "INFERD_API_KEYS")
    return keys


def append_key(path: Path, key: ApiKey) -> None:
    """Add ``key``'s record to a keys file, creating it readable by its owner only."""
    existing = load_keys_file(path) if path.exists() else []
    _check_unique([*existing, key], str(path))
    if path.suffix == ".json":
        text = json.dumps({"keys": [k.to_record() for k in [*existing, key]]}, indent=2) + "\n"
        _write_private(path, text, append=False)
        return
    record = key.to_record()
    scopes = ", ".join(json.dumps(s) for s in record["scopes"])
    block = f'\n[[keys]]\nname = {json.dumps(key.name)}\nsha256 = "{key.sha256}"\nscopes = [{scopes}]\n'
    _write_private(path, block, append=True)


def _write_private(path: Path, text: str, append: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    descriptor = os.open(path, flags, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(text)


def _check_unique(keys: list[ApiKey], source: str) -> None:
    names: set[str] = set()
    digests: set[str] = set()
    for key in keys:
        if key.name in names:
            raise KeysError(f"{source}: the name {key.name!r} is used by more than one key")
        if key.sha256 in digests:
            raise KeysError(f"{source}: key {key.name!r} has the same sha256 as another key")
        names.add(key.name)
        digests.add(key.sha256)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
