"""Finding the model versions and the artifact inside a model folder.

A model folder holds version folders ``1/``, ``2/``, ... each with one artifact, or the artifact itself (then
it is version 1). Which runtime serves it follows from the artifact's file name unless model.toml says.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from inferd.config import CONFIG_FILE, ModelConfig
from inferd.runtimes.registry import KNOWN_ARTIFACTS, RuntimeInfo, runtime_named

_RUNTIME_BY_SUFFIX = {
    ".onnx": "onnx",
    ".skops": "sklearn",
    ".joblib": "sklearn",
    ".pkl": "sklearn",
    ".ubj": "xgboost",
    ".pt": "torch",
    ".pt2": "torch",
    ".py": "python",
    ".gguf": "llama_cpp",
}


class ArtifactError(ValueError):
    """A model or version folder whose artifact cannot be determined."""


@dataclass(frozen=True, slots=True)
class VersionSource:
    version: int
    folder: Path
    artifact: Path
    runtime: RuntimeInfo


def find_versions(model_folder: Path) -> dict[int, Path]:
    """Version number → folder. A folder without numbered subfolders is itself version 1."""
    numbered = {
        int(p.name): p for p in model_folder.iterdir()
        if p.is_dir() and p.name.isascii() and p.name.isdigit() and int(p.name) > 0  # not "²"
    }
    if numbered:
        return numbered
    has_files = any(p.is_file() and p.name != CONFIG_FILE for p in model_folder.iterdir())
    if not has_files:
        raise ArtifactError(
            f"{model_folder}: no version folders (1/, 2/, ...) and no artifact; "
            f"expected one of {', '.join(KNOWN_ARTIFACTS)}"
        )
    return {1: model_folder}


def resolve_artifact(version: int, folder: Path, config: ModelConfig) -> VersionSource:
    """The artifact and runtime for one version folder, following model.toml where it says."""
    if config.artifact is not None:
        artifact = folder / config.artifact
        if not artifact.is_file():
            raise ArtifactError(f"{folder}: model.toml names artifact {config.artifact!r}, which is not there")
        return VersionSource(version, folder, artifact, _runtime_for(artifact, config))
    if config.runtime is not None:
        info = runtime_named(config.runtime)
        candidates = [folder / name for name in info.artifacts if (folder / name).is_file()]
        expected = ", ".join(info.artifacts)
    else:
        candidates = [folder / name for name in KNOWN_ARTIFACTS if (folder / name).is_file()]
        expected = ", ".join(KNOWN_ARTIFACTS)
    if not candidates and config.runtime in (None, "llama_cpp"):
        candidates = sorted(folder.glob("*.gguf"))  # GGUF files keep their published names
    if not candidates:
        present = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != CONFIG_FILE)
        raise ArtifactError(
            f"{folder}: no known artifact (found {', '.join(present) or 'no files'}; expected one of {expected}). "
            "Name it after its format, or set 'artifact' and 'runtime' in model.toml"
        )
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        raise ArtifactError(f"{folder}: more than one artifact ({names}); set 'artifact' in model.toml to choose")
    return VersionSource(version, folder, candidates[0], _runtime_for(candidates[0], config))


def artifact_sha256(artifact: Path) -> str:
    """The sha256 of an artifact file, read in chunks. For a folder: of a manifest listing each file's path
    (relative, POSIX, sorted) and sha256, one ``<sha256>  <path>`` line each, as ``sha256sum`` prints them."""
    if not artifact.is_dir():
        return _file_sha256(artifact)
    files = sorted(p for p in artifact.rglob("*") if p.is_file())
    manifest = "".join(f"{_file_sha256(p)}  {p.relative_to(artifact).as_posix()}\n" for p in files)
    return hashlib.sha256(manifest.encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    with path.open("rb") as file:  # file_digest reads in chunks, never the whole file at once
        return hashlib.file_digest(file, "sha256").hexdigest()


def _runtime_for(artifact: Path, config: ModelConfig) -> RuntimeInfo:
    if config.runtime is not None:
        return runtime_named(config.runtime)
    info = KNOWN_ARTIFACTS.get(artifact.name)
    if info is not None:
        return info
    by_suffix = _RUNTIME_BY_SUFFIX.get(artifact.suffix)
    if by_suffix is None:
        raise ArtifactError(f"{artifact}: cannot tell which runtime reads this file; set 'runtime' in model.toml")
    return runtime_named(by_suffix)
