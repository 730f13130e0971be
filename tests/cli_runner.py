"""Running the installed ``inferd`` command the way a user does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "200"  # wide Rich tables, so assertions see whole cells
    env.pop("VIRTUAL_ENV", None)
    return env


def inferd(*args: str, stdin: str | None = None, cwd: Path | None = None, timeout: float = 120,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed ``inferd`` command for real (``env``: variables added to the environment)."""
    return subprocess.run(
        [str(BIN / "inferd"), *args], input=stdin, capture_output=True, text=True, timeout=timeout,
        cwd=cwd, env={**cli_env(), **(env or {})}, check=False,
    )

