"""What the build files promise a newcomer: CPU-only dependencies by default, and a first run that says what
it is doing before each long step."""

from __future__ import annotations

import re
import subprocess
import tomllib

import pytest
from packaging.requirements import Requirement

from cli_runner import ROOT

LINUX = {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"}
MACOS = {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64"}


def requirements(extra: str, environment: dict[str, str]) -> set[str]:
    """The distributions ``pip install 'inferd[EXTRA]'`` asks for on that platform, extras of inferd expanded."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found: set[str] = set()
    pending = [extra]
    while pending:
        for line in project["optional-dependencies"][pending.pop()]:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": "", **environment}):
                continue
            if requirement.name == "inferd":
                pending.extend(requirement.extras)
            else:
                found.add(requirement.name)
    return found


@pytest.mark.parametrize("extra", ["xgboost", "demo", "all"])
def test_xgboost_is_the_cpu_build_on_linux(extra):
    """The ``xgboost`` wheel for Linux pulls nvidia-nccl-cu12 (469 MB); ``xgboost-cpu`` is the same library
    without it."""
    wanted = requirements(extra, LINUX)
    assert "xgboost-cpu" in wanted
    assert "xgboost" not in wanted


def test_macos_gets_the_plain_wheel_which_has_no_cuda():
    assert requirements("xgboost", MACOS) == {"xgboost"}  # xgboost-cpu has no macOS wheel


def test_the_gpu_build_is_an_opt_in_extra():
    assert requirements("xgboost-gpu", LINUX) == {"xgboost"}
    assert "xgboost-gpu" not in str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
                                    ["optional-dependencies"]["all"])


@pytest.mark.parametrize(("target", "long_steps"), [
    ("demo", [r"-m venv", r"pip install .* -e '\.\[demo\]'", r"bin/inferd demo"]),
    ("test", [r"-m venv", r"pip install .* -e '\.\[all,dev\]'", r"bin/pytest$"]),
])
def test_make_says_what_it_does_before_each_long_step(tmp_path, target, long_steps):
    """``make -n`` (print, do not run) for a venv not yet made: each long command comes right after a line that
    says what it does and about how long it takes."""
    run = subprocess.run(["make", "-n", "--no-print-directory", target, f"VENV={tmp_path / 'venv'}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=True)
    lines = run.stdout.splitlines()
    for step in long_steps:
        index = next(i for i, line in enumerate(lines) if re.search(step, line) and "==> " not in line)
        announced = [line for line in lines[max(0, index - 3):index] if "==> " in line]
        assert announced, f"nothing said before {lines[index]!r}:\n{run.stdout}"
        assert re.search(r"\d+ (s|minutes?)|few minutes|several minutes", announced[-1]), announced[-1]
