"""The sha256 recorded when a model version loads: of the artifact file, or of a manifest of a folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fakes import ADDER, write_model
from inferd.artifacts import artifact_sha256
from inferd.dataplane import DataPlane
from inferd.repository import ModelRepository


def test_a_file_hashes_to_its_sha256(tmp_path: Path) -> None:
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(bytes(range(256)) * 20_000)  # 5 MB: read in chunks
    assert artifact_sha256(artifact) == hashlib.sha256(artifact.read_bytes()).hexdigest()


def test_a_folder_hashes_to_the_sha256_of_its_sorted_manifest(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.bin").write_bytes(b"bee")
    (folder / "sub" / "a.txt").write_bytes(b"ay")
    manifest = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n"
                       for name, data in (("b.bin", b"bee"), ("sub/a.txt", b"ay")))
    first = artifact_sha256(folder)
    assert first == hashlib.sha256(manifest.encode()).hexdigest()
    (folder / "sub" / "a.txt").write_bytes(b"changed")
    assert artifact_sha256(folder) != first
    (folder / "sub" / "a.txt").write_bytes(b"ay")
    (folder / "sub" / "a.txt").rename(folder / "sub" / "c.txt")
    assert artifact_sha256(folder) != first, "names count, not only contents"


def test_the_digest_is_kept_on_the_version_and_shown_in_metadata(tmp_path: Path) -> None:
    folder = write_model(tmp_path, "adder", ADDER)
    expected = hashlib.sha256((folder / "1" / "model.py").read_bytes()).hexdigest()
    plane = DataPlane(ModelRepository(tmp_path))
    plane.repository.load_all()
    assert plane.repository.get("adder").sha256 == expected
    assert plane.model_metadata("adder").parameters == {"sha256": expected}
    plane.close()
