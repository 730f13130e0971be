"""Regenerate inferd's gRPC code from the .proto files with grpc_tools.protoc.

    .venv/bin/python scripts/generate_grpc.py            # rewrite src/inferd/server/grpc/generated
    .venv/bin/python scripts/generate_grpc.py OUT_DIR    # write somewhere else (the drift test does)

protoc writes modules that import each other as top-level modules and register their messages in
protobuf's default descriptor pool. Two rewrites make them fit a package:

* imports become package-relative (``from . import model_config_pb2``);
* messages go to the package's own pool (``POOL`` in the generated ``__init__.py``), because other
  copies of the same protocol (tritonclient's, KServe's) use the same file and message names, and the
  default pool refuses a second definition: with a private pool inferd and a Triton client can share a
  process.

The output depends only on the .proto files and the grpcio-tools version, so the committed files can be
checked for drift by regenerating them.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "src" / "inferd" / "server" / "grpc" / "proto"
OUT_DIR = ROOT / "src" / "inferd" / "server" / "grpc" / "generated"
MESSAGES = ("model_config.proto", "grpc_service.proto")
SERVICES = ("grpc_service.proto",)

INIT = '''"""Code generated from ../proto by scripts/generate_grpc.py: do not edit, regenerate.

The messages are registered in ``POOL``, a descriptor pool of their own, not in protobuf's default pool, so
that another copy of the same protocol (tritonclient's, KServe's) can be imported in the same process.
"""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
'''

_SIBLING_IMPORT = re.compile(r"^import (\w+_pb2) as (\w+)$", re.MULTILINE)
_DEFAULT_POOL = "_descriptor_pool.Default().AddSerializedFile("
_POOL_IMPORT = "from google.protobuf import descriptor_pool as _descriptor_pool\n"


def generate(out_dir: Path) -> list[Path]:
    """Generate every module into ``out_dir`` (created if needed); return the files written, sorted."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in (*out_dir.glob("*_pb2.py"), *out_dir.glob("*_pb2.pyi"), *out_dir.glob("*_pb2_grpc.py")):
        stale.unlink()
    with tempfile.TemporaryDirectory() as scratch:
        _protoc(["--python_out", scratch, "--pyi_out", scratch, *MESSAGES])
        _protoc(["--grpc_python_out", scratch, *SERVICES])
        written = [_write_fixed(source, out_dir) for source in sorted(Path(scratch).iterdir())]
    init = out_dir / "__init__.py"
    init.write_text(INIT)
    return sorted([*written, init])


def _protoc(arguments: list[str]) -> None:
    command = ["grpc_tools.protoc", f"--proto_path={PROTO_DIR}", *arguments]
    if protoc.main(command) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(command)}")


def _write_fixed(source: Path, out_dir: Path) -> Path:
    text = _SIBLING_IMPORT.sub(r"from . import \1 as \2", source.read_text())
    if source.name.endswith("_pb2.py"):
        if _DEFAULT_POOL not in text or _POOL_IMPORT not in text:
            raise RuntimeError(f"{source.name}: protoc's output changed; update scripts/generate_grpc.py")
        text = text.replace(_POOL_IMPORT, _POOL_IMPORT + "from . import POOL as _POOL\n")
        text = text.replace(_DEFAULT_POOL, "_POOL.AddSerializedFile(")
    target = out_dir / source.name
    target.write_text(text)
    return target


def main(argv: list[str]) -> int:
    out_dir = Path(argv[0]).resolve() if argv else OUT_DIR
    for path in generate(out_dir):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
