"""Damaged XGBoost and LightGBM model files: each one well formed enough to reach the native library, which
crashes (segfault, abort) or hangs on it. Shared by the runtime unit tests and the end-to-end probe."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

Tree = dict[str, Any]


def _first_tree(document: dict[str, Any]) -> Tree:
    tree: Tree = document["learner"]["gradient_booster"]["model"]["trees"][0]
    return tree


def _set(key: str, index: int, value: int) -> Callable[[Tree], None]:
    def change(tree: Tree) -> None:
        tree[key][index] = value

    return change


XGBOOST_DAMAGE: dict[str, Callable[[Tree], None]] = {
    "left-child-out-of-range": _set("left_children", 0, 9999),  # segfault on the first prediction
    "left-child-negative": _set("left_children", 0, -7),
    "root-is-a-child": _set("left_children", 1, 0),  # a loop back to the root
    "leaf-with-one-child": lambda tree: tree["left_children"].__setitem__(
        tree["left_children"].index(-1), 1),
    "split-on-missing-feature": _set("split_indices", 0, 99999),
    "categorical-split-without-categories": _set("split_type", 0, 1),
    "parent-out-of-range": _set("parents", 3, -3),  # XGBoost follows parents too: a segfault
}


def damage_xgboost(source: Path, target: Path, damage: str) -> Path:
    """Write ``source`` (a model.json) to ``target`` with its first tree damaged as named."""
    document = json.loads(source.read_text())
    XGBOOST_DAMAGE[damage](_first_tree(document))
    target.write_text(json.dumps(document))
    return target


def _field(key: str, change: Callable[[list[str]], list[str]]) -> Callable[[list[str]], list[str]]:
    def apply(lines: list[str]) -> list[str]:
        return [f"{key}={' '.join(change(line.partition('=')[2].split()))}" if line.startswith(f"{key}=") else line
                for line in lines]

    return apply


def _item(index: int, value: str) -> Callable[[list[str]], list[str]]:
    return lambda values: [value if i == index else v for i, v in enumerate(values)]


LIGHTGBM_DAMAGE: dict[str, Callable[[list[str]], list[str]]] = {
    "num-leaves-changed": lambda lines: [  # SIGABRT while loading: the parser's check fails inside OpenMP
        f"num_leaves={int(line.split('=')[1]) + 1}" if line.startswith("num_leaves=") else line for line in lines],
    "left-child-out-of-range": _field("left_child", _item(0, "99")),  # segfault on predict
    "child-loops-to-root": _field("left_child", _item(1, "0")),  # predict never returns
    "children-shared": lambda lines: [  # right_child := left_child: every child has two parents
        "right_child=" + next(x for x in lines if x.startswith("left_child=")).partition("=")[2]
        if line.startswith("right_child=") else line for line in lines],
    "split-on-missing-feature": _field("split_feature", _item(0, "999")),
    "not-a-number": _field("threshold", _item(0, "abc")),  # SIGABRT while loading
    "num-cat-without-categories": lambda lines: [
        "num_cat=1" if line.startswith("num_cat=") else line for line in lines],
}


def damage_lightgbm(source: Path, target: Path, damage: str) -> Path:
    """Write ``source`` (a model.txt) to ``target`` with its first tree damaged as named, and the header's
    ``tree_sizes`` fixed to match (so only the tree itself is wrong)."""
    text = source.read_text()
    start = text.index("\nTree=0\n") + 1
    end = text.index("\n\n\n", start) + 3
    lines = text[start:end].rstrip("\n").split("\n")
    tree = "\n".join([lines[0], *LIGHTGBM_DAMAGE[damage](lines[1:])]) + "\n\n\n"
    text = text[:start] + tree + text[end:]
    sizes = re.search(r"^tree_sizes=(.*)$", text, re.MULTILINE)
    assert sizes is not None
    fixed = [str(len(tree.encode())), *sizes.group(1).split()[1:]]
    text = text[:sizes.start(1)] + " ".join(fixed) + text[sizes.end(1):]
    target.write_text(text)
    return target
