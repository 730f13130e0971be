from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from inferd.batch import BatchError
from inferd.batch.journal import Done, Journal, describe_changes, model_fingerprint


def identity(size: int = 10, batch_size: int = 100, sha: str = "m1") -> dict[str, Any]:
    return {"inputs": [{"path": "a.csv", "size": size, "modified": "1", "sample_sha256": "x"}],
            "model": {"name": "m", "version": 1, "runtime": "onnx", "sha256": sha},
            "options": {"batch_size": batch_size}}


def complete(journal: Journal, file: int, batch: int, payload: bytes = b"rows") -> None:
    journal.part(file, batch).write_bytes(payload)
    journal.record(file, batch, Done(5, 0, len(payload), 0))


def test_a_reopened_journal_knows_what_is_done(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, identity(), restart=False)
    complete(journal, 0, 0)
    complete(journal, 0, 1)
    journal.record_file(0, 3)
    journal.close()
    again = Journal.open(tmp_path, identity(), restart=False)
    assert set(again.completed) == {(0, 0), (0, 1)}
    assert again.file_batches == {0: 3}
    again.close()


def test_a_torn_last_line_and_a_lost_part_are_ignored(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, identity(), restart=False)
    complete(journal, 0, 0)
    complete(journal, 0, 1)
    journal.close()
    journal.part(0, 1).write_bytes(b"ro")  # shorter than journaled: scored again
    with (tmp_path / ".inferd-batch" / "journal.jsonl").open("ab") as handle:
        handle.write(b'{"file": 0, "batch": 2, "ro')
    again = Journal.open(tmp_path, identity(), restart=False)
    assert set(again.completed) == {(0, 0)}
    again.close()


def test_a_different_job_is_refused_with_what_changed(tmp_path: Path) -> None:
    Journal.open(tmp_path, identity(), restart=False).close()
    with pytest.raises(BatchError) as caught:
        Journal.open(tmp_path, identity(size=11, batch_size=50, sha="m2"), restart=False)
    message = str(caught.value)
    assert "input file a.csv changed (size)" in message
    assert "option batch_size was 100, now 50" in message
    assert "the model changed (sha256" in message
    assert "--restart" in message


def test_restart_discards_the_earlier_run(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, identity(), restart=False)
    complete(journal, 0, 0)
    journal.close()
    fresh = Journal.open(tmp_path, identity(size=99), restart=True)
    assert fresh.completed == {}
    fresh.close()


def test_describe_changes_lists_new_and_gone_files() -> None:
    before = {"inputs": [{"path": "a.csv"}, {"path": "b.csv"}]}
    now = {"inputs": [{"path": "a.csv"}, {"path": "c.csv"}]}
    assert describe_changes(before, now) == ["input file c.csv is new", "input file b.csv is gone"]


def test_model_fingerprint_follows_content(tmp_path: Path) -> None:
    artifact = tmp_path / "m" / "1" / "model.onnx"
    artifact.parent.mkdir(parents=True)
    artifact.write_bytes(b"one")
    first = model_fingerprint("m", 1, "onnx", artifact, tmp_path / "m" / "model.toml")
    artifact.write_bytes(b"two")
    assert model_fingerprint("m", 1, "onnx", artifact, tmp_path / "m" / "model.toml") != first
