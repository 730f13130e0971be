"""Shared fixtures: small model repositories built inside the tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cli_runner import inferd
from fakes import ADDER, FAILING, write_model
from inferd.dataplane import DataPlane
from inferd.repository import ModelRepository
from postgres_cluster import postgres_cluster, postgres_dsn  # noqa: F401  (fixtures: a throw-away PostgreSQL)


@pytest.fixture
def repo_root(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    return root


@pytest.fixture
def python_repo(repo_root: Path) -> Path:
    write_model(repo_root, "adder", ADDER)
    write_model(repo_root, "failing", FAILING)
    return repo_root


@pytest.fixture
def dataplane(python_repo: Path) -> Iterator[DataPlane]:
    plane = DataPlane(ModelRepository(python_repo))
    asyncio.run(plane.start())
    yield plane
    plane.close()


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x.astype(np.float32), y


@pytest.fixture
def cli():  # type: ignore[no-untyped-def]
    """Run the installed ``inferd`` command in a subprocess."""
    return inferd
