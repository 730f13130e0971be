"""``inferd --help`` and each command's ``--help`` load only typer, rich and the standard library (plus
pydantic, which typer imports itself), never what only inference needs: checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# What a command imports when it runs, never to print its help.
HEAVY = ("numpy", "ml_dtypes", "onnxruntime", "fastapi", "starlette", "uvicorn", "grpc", "google.protobuf",
         "pyarrow", "fsspec", "httpx", "sklearn", "skops", "xgboost", "lightgbm", "torch", "ray",
         "prometheus_client", "pydantic_settings", "rich.progress",
         "inferd.dataplane", "inferd.repository", "inferd.settings", "inferd.server", "inferd.batch")

# Run the real entry point, then report every module the process holds.
SCRIPT = """
import json, sys
from inferd.cli.main import main
sys.argv = ["inferd", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
print("\\n" + json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def imported_by(*args: str) -> tuple[int, set[str]]:
    run = subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, timeout=60,
                         check=True)
    report = json.loads(run.stdout.strip().splitlines()[-1])
    return report["code"], set(report["modules"])


@pytest.mark.parametrize("args", [
    ("--help",), ("--version",), ("serve", "--help"), ("demo", "--help"), ("predict", "--help"),
    ("batch", "run", "--help"), ("models", "list", "--help"), ("jobs", "list", "--help"), ("keys", "create", "--help"),
    ("endpoints", "rollout", "--help"),
], ids=" ".join)
def test_help_does_not_import_what_inference_needs(args):
    code, modules = imported_by(*args)
    assert code in (0, None)
    loaded = sorted(m for m in HEAVY if m in modules)
    assert not loaded, f"inferd {' '.join(args)} imported {loaded}"


def test_the_check_sees_imports():
    """The same check does see what a command loads when it runs (here: a repository it opens)."""
    _, modules = imported_by("models", "list", "/nonexistent-repository")
    assert "inferd.repository" in modules
