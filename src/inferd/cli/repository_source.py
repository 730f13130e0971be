"""The model repository of ``inferd serve`` given no REPO: where the platform that runs the container put the models.

In order, the first that applies:

1. ``INFERD_REPOSITORY``: a folder.
2. SageMaker: ``/opt/ml/model``, where SageMaker extracts the ``ModelDataUrl`` archive, when a variable of
   SageMaker's is set (``SAGEMAKER_*``: SageMaker sets ``SAGEMAKER_BIND_TO_PORT`` and ``SAGEMAKER_SAFE_PORT_RANGE``
   in inference pipelines and multi-container endpoints, its SDK sets ``SAGEMAKER_PROGRAM``, ``SAGEMAKER_REGION``,
   ``SAGEMAKER_CONTAINER_LOG_LEVEL``...; ``SM_*``: its toolkits, such as ``SM_MODEL_DIR``). SageMaker starts the
   container as ``docker run IMAGE serve``: with the image's entry point ``inferd``, that is ``inferd serve``.
3. Vertex AI: ``AIP_STORAGE_URI``, the Cloud Storage folder Vertex copied the model artifacts to. A local path (or
   ``file://``) is served where it is; any other URL (``gs://``, ``s3://``... with its fsspec package installed) is
   copied once into ``<state dir>/storage/<digest of the URL>`` and served from there.
4. ``/opt/ml/model`` when it is a folder (a SageMaker endpoint made with no environment at all).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

SAGEMAKER_MODEL_DIR = Path("/opt/ml/model")
"""Where SageMaker extracts the model artifacts in a hosting container."""

SAGEMAKER_PREFIXES = ("SAGEMAKER_", "SM_")


class NoRepositoryError(ValueError):
    """No REPO and nothing in the environment names one, or the one named cannot be fetched."""


def find_repository(environ: Mapping[str, str] | None = None, state_dir: Path | None = None,
                    sagemaker_dir: Path = SAGEMAKER_MODEL_DIR) -> Path:
    """The repository folder the environment names (see the module's docstring); ``state_dir``: where a copy of a
    remote ``AIP_STORAGE_URI`` goes (default: ``INFERD_STATE_DIR``, else ``.inferd``)."""
    env = os.environ if environ is None else environ
    if env.get("INFERD_REPOSITORY"):
        return Path(env["INFERD_REPOSITORY"])
    if any(name.startswith(SAGEMAKER_PREFIXES) for name in env):
        return sagemaker_dir
    uri = env.get("AIP_STORAGE_URI")
    if uri:
        state = state_dir or Path(env.get("INFERD_STATE_DIR") or ".inferd")
        return storage_folder(uri, state / "storage")
    if sagemaker_dir.is_dir():
        return sagemaker_dir
    raise NoRepositoryError(
        "no model repository: give REPO, or set INFERD_REPOSITORY, or run where SageMaker (/opt/ml/model) or "
        "Vertex AI (AIP_STORAGE_URI) put the models")


def storage_folder(uri: str, cache: Path) -> Path:
    """A local folder holding what ``uri`` holds: the path itself when it is local, else a copy made once in
    ``cache`` (a copy half made by a process that died is not used: it is made beside, then renamed)."""
    scheme = urlsplit(uri).scheme
    if scheme in ("", "file") or len(scheme) == 1:  # one letter: a Windows drive
        return Path(urlsplit(uri).path if scheme == "file" else uri)
    target = cache / hashlib.sha256(uri.encode()).hexdigest()[:16]
    if target.is_dir():
        return target
    import fsspec

    partial = cache / f"{target.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        fs, root = fsspec.core.url_to_fs(uri)
        root = root.rstrip("/")
        if not fs.isdir(root):
            raise NoRepositoryError(f"AIP_STORAGE_URI {uri}: not a folder")
        for source in fs.find(root):
            destination = partial / source[len(root):].lstrip("/")
            destination.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(source, str(destination))
        partial.mkdir(parents=True, exist_ok=True)  # an empty folder stays an (empty) repository
        _settle(partial, target)
    except NoRepositoryError:
        raise
    except (ImportError, ValueError, OSError) as exc:  # no fsspec package for the scheme, unreachable, refused
        raise NoRepositoryError(f"AIP_STORAGE_URI {uri}: cannot copy it: {exc}") from exc
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _settle(partial: Path, target: Path) -> None:
    """Rename the finished copy into place; another process that finished first has already put it there."""
    try:
        partial.rename(target)
    except OSError:
        if not target.is_dir():
            raise
