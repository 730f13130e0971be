"""The checkpoint journal: which mini-batches are done, so a killed job resumes where it stopped.

It lives in ``<output>/.inferd-batch/``: ``journal.jsonl`` (a header line with the job's fingerprint, then
one line per completed mini-batch and per fully read input file) and ``parts/`` (each completed mini-batch's
output rows and error records). A mini-batch counts as done only once its part files are renamed into place
and its journal line is written and fsynced, so a kill at any moment loses at most the mini-batches in
flight, which the next run scores again. A torn last line is ignored.

The fingerprint names the inputs (size, modification time, a hash of head and tail), the model (version and
a hash of its artifact and model.toml) and the options that shape the output. A resumed run whose fingerprint
differs is refused with a message naming what changed, unless it restarts.

Every journal file is opened through the job's :class:`~inferd.roots.Roots`: a ``.inferd-batch`` that is a
symbolic link out of ``batch_roots`` is refused, never written through.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from inferd.batch.options import BatchError
from inferd.batch.writers import write_atomic
from inferd.roots import ANYWHERE, Roots

FOLDER = ".inferd-batch"
VERSION = 1


@dataclass(frozen=True, slots=True)
class Done:
    """A completed mini-batch."""

    rows: int
    failed: int
    part_bytes: int
    error_bytes: int


class Journal:
    """Append-only record of completed mini-batches, one per job output folder."""

    def __init__(self, folder: Path, fingerprint: dict[str, Any], roots: Roots = ANYWHERE) -> None:
        self.folder = folder
        self.fingerprint = fingerprint
        self.roots = roots
        """Where the journal, the parts and the job's outputs may be written."""
        self.completed: dict[tuple[int, int], Done] = {}
        self.file_batches: dict[int, int] = {}
        """Input file -> how many mini-batches it has (known once it was read to the end)."""
        self.summary: dict[str, Any] | None = None
        """The finished job's summary, once it is complete."""
        self._path = folder / "journal.jsonl"
        self._handle: int | None = None
        self._lock = threading.Lock()

    @classmethod
    def open(cls, output: Path, fingerprint: dict[str, Any], restart: bool, roots: Roots = ANYWHERE) -> Journal:
        """The job's journal: a new one, or the earlier run's when the fingerprint matches."""
        journal = cls(output / FOLDER, fingerprint, roots)
        if restart:
            roots.remove_tree(journal.folder)
        roots.makedirs(journal.folder / "parts")
        if journal._path.exists():
            journal._load()
        else:
            write_atomic(journal._path, [orjson.dumps({"journal": VERSION, "fingerprint": fingerprint}) + b"\n"],
                         roots)
        journal._handle = roots.open(journal._path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0),
                                     "journal")
        return journal

    def part(self, file: int, batch: int, kind: str = "rows") -> Path:
        return self.folder / "parts" / f"{file:05d}-{batch:09d}.{kind}"

    def record(self, file: int, batch: int, done: Done) -> None:
        self.completed[(file, batch)] = done
        self._append({"file": file, "batch": batch, "rows": done.rows, "failed": done.failed,
                      "part_bytes": done.part_bytes, "error_bytes": done.error_bytes})

    def record_file(self, file: int, batches: int) -> None:
        self.file_batches[file] = batches
        self._append({"file": file, "batches": batches})

    def record_summary(self, summary: dict[str, Any]) -> None:
        self.summary = summary
        self._append({"summary": summary})

    def discard_parts(self) -> None:
        with contextlib.suppress(OSError):
            self.roots.remove_tree(self.folder / "parts")

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                os.close(self._handle)
                self._handle = None

    def _append(self, entry: dict[str, Any]) -> None:
        with self._lock:
            if self._handle is None:  # a write still finishing after the job stopped: the next run redoes it
                return
            os.write(self._handle, orjson.dumps(entry) + b"\n")
            os.fsync(self._handle)

    def _load(self) -> None:
        lines = self.roots.read_bytes(self._path, "journal").split(b"\n")
        header = _parse(lines[0])
        if header is None or header.get("journal") != VERSION:
            raise BatchError(f"{self._path} is not a batch journal this version of inferd reads; "
                             "run again with --restart to start over")
        changes = describe_changes(header["fingerprint"], self.fingerprint)
        if changes:
            raise BatchError(
                f"{self.folder.parent} holds an earlier run of a different job: {'; '.join(changes)}. "
                "Run again with --restart to discard it and start over, or choose another output folder"
            )
        for line in lines[1:]:
            entry = _parse(line)
            if entry is not None:
                self._apply(entry)

    def _apply(self, entry: dict[str, Any]) -> None:
        if "summary" in entry:
            self.summary = entry["summary"]
        elif "batches" in entry:
            self.file_batches[entry["file"]] = entry["batches"]
        elif "batch" in entry:
            done = Done(entry["rows"], entry["failed"], entry["part_bytes"], entry["error_bytes"])
            key = (entry["file"], entry["batch"])
            if self._intact(key, done):  # a part lost since (say, a disk that did not keep it): score it again
                self.completed[key] = done

    def _intact(self, key: tuple[int, int], done: Done) -> bool:
        rows, errors = self.part(*key), self.part(*key, kind="errors")
        return (rows.is_file() and rows.stat().st_size == done.part_bytes
                and (not done.error_bytes or (errors.is_file() and errors.stat().st_size == done.error_bytes)))


def _parse(line: bytes) -> dict[str, Any] | None:
    if not line.strip():
        return None
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:  # the line a kill tore in half
        return None
    return value if isinstance(value, dict) else None


def describe_changes(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two job fingerprints, in words."""
    changes = _input_changes(before.get("inputs", []), now.get("inputs", []))
    old_model, new_model = before.get("model", {}), now.get("model", {})
    if old_model != new_model:
        detail = ", ".join(f"{k} {old_model.get(k)!r} -> {new_model.get(k)!r}"
                           for k in sorted(set(old_model) | set(new_model)) if old_model.get(k) != new_model.get(k))
        changes.append(f"the model changed ({detail})")
    old_options, new_options = before.get("options", {}), now.get("options", {})
    for name in sorted(set(old_options) | set(new_options)):
        if old_options.get(name) != new_options.get(name):
            changes.append(f"option {name} was {old_options.get(name)!r}, now {new_options.get(name)!r}")
    return changes


def _input_changes(before: list[dict[str, Any]], now: list[dict[str, Any]]) -> list[str]:
    old = {f["path"]: f for f in before}
    new = {f["path"]: f for f in now}
    changes = [f"input file {p} is new" for p in new if p not in old]
    changes += [f"input file {p} is gone" for p in old if p not in new]
    for path in (p for p in new if p in old and old[p] != new[p]):
        what = [k for k in ("size", "modified", "sample_sha256") if old[path].get(k) != new[path].get(k)]
        words = {"size": "size", "modified": "modification time", "sample_sha256": "content"}
        changes.append(f"input file {path} changed ({', '.join(words[k] for k in what)})")
    if not changes and [f["path"] for f in before] != [f["path"] for f in now]:
        changes.append("the input files are in a different order")
    return changes


def model_fingerprint(name: str, version: int, runtime: str, artifact: Path, config: Path | None) -> dict[str, Any]:
    """The model's identity: name, version, runtime and a SHA-256 of its artifact (file or folder) and
    model.toml."""
    digest = hashlib.sha256()
    files = sorted(p for p in artifact.rglob("*") if p.is_file()) if artifact.is_dir() else [artifact]
    for path in [*files, *([config] if config is not None and config.is_file() else [])]:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return {"name": name, "version": version, "runtime": runtime, "sha256": digest.hexdigest()}
