"""The layering rules of the package, read from its imports (every import statement, lazy ones in functions and
type-only ones included). A new import that breaks a rule fails here with the module and the import named."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "inferd"
TRANSPORTS = ("inferd.server",)
WEB_FRAMEWORKS = ("fastapi", "starlette", "uvicorn", "httptools", "grpc", "httpx")
INFERENCE_INTERNALS = ("inferd.scheduling", "inferd.executors", "inferd.runtimes", "inferd.loading", "inferd.server")


def _modules() -> dict[str, list[tuple[str, bool]]]:
    """Each module's imports: (imported module, whether only for type checking)."""
    found: dict[str, list[tuple[str, bool]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "generated" in path.parts:
            continue
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                       for node in ast.walk(block)}
        imports = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imports.append((node.module, id(node) in typing_only))
            elif isinstance(node, ast.Import):
                imports.extend((alias.name, id(node) in typing_only) for alias in node.names)
        found[name] = imports
    return found


MODULES = _modules()


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _violations(importers: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    return [f"{module} imports {target}" for module, imports in MODULES.items() if _under(module, importers)
            for target, _ in imports if _under(target, forbidden)]


@pytest.mark.parametrize(("importers", "forbidden", "rule"), [
    (("inferd.runtimes",), ("inferd.server", "inferd.jobs", "inferd.batch"), "runtimes know nothing of serving"),
    (("inferd.dataplane", "inferd.calls"), TRANSPORTS, "the DataPlane imports no transport"),
    (("inferd.codecs",), WEB_FRAMEWORKS + TRANSPORTS, "codecs are wire formats, free of web frameworks"),
    (("inferd.security", "inferd.observability"), TRANSPORTS, "security and observability import no transport"),
    (("inferd.jobs", "inferd.batch"), INFERENCE_INTERNALS, "jobs and batch reach inference through the DataPlane"),
    (("inferd.scheduling", "inferd.executors", "inferd.generation"),
     ("inferd.dataplane", "inferd.repository", "inferd.loading", *TRANSPORTS),
     "the layers below the DataPlane do not reach up"),
])
def test_layering_rule(importers, forbidden, rule):
    assert _violations(importers, forbidden) == [], rule


def _unit(module: str) -> str:
    """The subpackage (or top-level module) a module belongs to: ``inferd.server.rest.v2`` -> ``server``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_cycle_between_subpackages():
    """Imports that run (type-only ones do not) never form a cycle between subpackages or top-level modules."""
    graph: dict[str, set[str]] = defaultdict(set)
    for module, imports in MODULES.items():
        for target, typing_only in imports:
            if target.startswith("inferd.") and not typing_only and _unit(target) != _unit(module):
                graph[_unit(module)].add(_unit(target))
    cycles = []
    for start in sorted(graph):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    cycles.append(" -> ".join([*path, start]))
                elif nxt not in path and nxt > start:  # each cycle once, from its smallest member
                    stack.append((nxt, [*path, nxt]))
    assert cycles == []


def test_the_rules_see_the_imports():
    """The walk finds imports where they are: a guard against a test that passes because it reads nothing."""
    assert ("inferd.dataplane", False) in MODULES["inferd.server.rest.v2_infer"]
    assert any(target == "inferd.loading" and typing_only for target, typing_only in MODULES["inferd.calls"])
    assert any(target == "inferd.server.rest.app" for target, _ in MODULES["inferd.server.runner"])  # a lazy one
