"""One real ``inferd serve`` subprocess per test session, over a repository with the demo models, an echo
model per datatype and the fake python models; tests talk to it with real clients over loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from echo_models import write_echo_models
from fakes import ADDER, FAILING, write_model
from server_process import ServerProcess


@pytest.fixture(scope="session")
def e2e_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inferd.examples.build import build_demo_repository

    root = tmp_path_factory.mktemp("e2e") / "models"
    build_demo_repository(root)
    write_echo_models(root)
    write_model(root, "adder", ADDER)
    write_model(root, "failing", FAILING)
    write_model(root, "scratch", ADDER)  # loaded and unloaded by the repository tests; nothing else uses it
    return root


@pytest.fixture(scope="session")
def server(e2e_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(e2e_repo, tmp_path_factory.mktemp("logs") / "serve.log",
                            extra_args=["--max-body-bytes", str(4 * 1024 * 1024)])
    process.start(timeout=120)
    yield process
    code = process.stop()
    assert code == 0, f"inferd serve exited with {code} on SIGTERM:\n{process.log()}"
