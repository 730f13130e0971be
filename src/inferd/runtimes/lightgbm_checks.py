"""Checks of a LightGBM text model, made before LightGBM's native code sees it.

A model file is untrusted input, and LightGBM's parser and predictor trust it. The parser reads the trees
in parallel (OpenMP), where a failed check cannot be raised as an error and aborts the whole process
(``[LightGBM] [Fatal] Check failed``, SIGABRT): a ``num_leaves`` that does not match a tree's arrays, a
value that is not a number, a missing field. The predictor follows child indices without bounds checks: one
out of range is a segfault, and a loop makes the call spin for ever. So the file is checked here first:

- the layout: each tree where the header's ``tree_sizes`` says, ``end of trees`` after the last;
- each tree: every field LightGBM reads is there, holds numbers of the right kind and as many as
  ``num_leaves`` asks (``num_leaves - 1`` per internal node, ``num_leaves`` per leaf); children are internal
  nodes or leaves of the tree, no node or leaf has two parents and the root none (then a walk from the root
  always ends, at a leaf); splits and linear leaves use features the model has; categorical splits point into
  the tree's category bitsets.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np

_TREES_START = re.compile(rb"^(Tree=|end of trees$)", re.MULTILINE)
_TREE_SIZES = re.compile(rb"^tree_sizes=([0-9 ]*)$", re.MULTILINE)
_HEADER_INT = re.compile(rb"^(max_feature_idx|num_class|num_tree_per_iteration)=(-?[0-9]+)$", re.MULTILINE)
_MAX_LINES = 22
"""LightGBM reads at most this many ``key=value`` lines of a tree."""
_CATEGORICAL = 1
"""The bit of ``decision_type`` that marks a categorical split."""

_INTERNAL_FLOATS = ("threshold", "split_gain", "internal_value", "internal_weight")
_INTERNAL_INTS = ("split_feature", "left_child", "right_child", "internal_count", "decision_type")
_LEAF_FLOATS = ("leaf_value", "leaf_weight", "leaf_const")
_LEAF_INTS = ("leaf_count", "num_features")
_REQUIRED = ("left_child", "right_child", "split_feature", "threshold")


class ModelStructureError(ValueError):
    """The model's content cannot be safe to run; the message says where and what."""


def check(data: bytes) -> None:
    """Raise :class:`ModelStructureError` when LightGBM could crash or hang on the file."""
    problem = layout_problem(data)
    if problem:
        raise ModelStructureError(problem)
    header = dict((key.decode(), int(value)) for key, value in _HEADER_INT.findall(data[:data.find(b"\nTree=")]))
    features = header.get("max_feature_idx", -1) + 1
    if features < 1:
        raise ModelStructureError("the header has no max_feature_idx")
    for number, block in _tree_blocks(data):
        try:
            _check_tree(_fields(block), features)
        except ModelStructureError as exc:
            raise ModelStructureError(f"Tree={number}: {exc}") from None


def layout_problem(data: bytes) -> str | None:
    """What is missing from a model file whose trees or parameters are cut short, or None."""
    trees = _TREES_START.search(data)
    if trees is None:
        return "no trees; the file is truncated or is not a LightGBM text model"
    offset = trees.start()
    sizes = _TREE_SIZES.search(data, 0, offset)
    for size in sizes.group(1).split() if sizes else ():
        if not data.startswith(b"Tree=", offset):
            return f"expected a tree at byte {offset}; the file is truncated or altered"
        offset += int(size)
    ended = data.startswith(b"end of trees\n", offset) if sizes else b"\nend of trees\n" in data
    if not ended:
        return f"expected 'end of trees' at byte {offset}; the file is truncated or altered"
    if b"\nparameters:\n" in data and b"\nend of parameters\n" not in data:
        return "no 'end of parameters' line; the file is truncated"
    return None


def _tree_blocks(data: bytes) -> Iterator[tuple[str, list[bytes]]]:
    """Each tree's number and its ``key=value`` lines (up to the blank line that ends them)."""
    start = data.find(b"Tree=")
    end = data.find(b"\nend of trees", start)
    for chunk in re.split(rb"^Tree=", data[start:end], flags=re.MULTILINE)[1:]:
        first, _, rest = chunk.partition(b"\n")
        lines: list[bytes] = []
        for line in rest.split(b"\n"):
            if not line.strip(b"\r"):
                break
            lines.append(line.rstrip(b"\r"))
        yield first.decode("ascii", "replace"), lines


def _fields(lines: list[bytes]) -> dict[str, bytes]:
    if len(lines) > _MAX_LINES:
        raise ModelStructureError(f"{len(lines)} lines of fields; LightGBM reads {_MAX_LINES}")
    fields: dict[str, bytes] = {}
    for line in lines:
        key, equals, value = line.partition(b"=")
        if not equals:
            raise ModelStructureError(f"a line without '=': {line[:40]!r}")
        fields[key.decode("ascii", "replace")] = value
    return fields


def _check_tree(fields: dict[str, bytes], features: int) -> None:
    leaves = _scalar(fields, "num_leaves")
    num_cat = _scalar(fields, "num_cat")
    linear = _scalar(fields, "is_linear", 0) != 0
    if leaves < 1 or num_cat < 0:
        raise ModelStructureError(f"num_leaves {leaves} and num_cat {num_cat}: a tree has at least one leaf")
    if _numbers(fields, "leaf_value", leaves, float) is None:
        raise ModelStructureError("no leaf_value")
    if leaves == 1 and not linear:
        return  # all LightGBM reads of a stump
    arrays = {name: _numbers(fields, name, leaves, float) for name in _LEAF_FLOATS}
    arrays |= {name: _numbers(fields, name, leaves, int) for name in _LEAF_INTS}
    if linear:
        _check_linear(fields, arrays.get("num_features"), leaves, features)
    missing = [name for name in _REQUIRED if name not in fields]
    if missing:
        raise ModelStructureError(f"no {', '.join(missing)}, which a tree of {leaves} leaves needs")
    arrays |= {name: _numbers(fields, name, leaves - 1, float) for name in _INTERNAL_FLOATS}
    arrays |= {name: _numbers(fields, name, leaves - 1, int) for name in _INTERNAL_INTS}
    _check_children(_present(arrays, "left_child"), _present(arrays, "right_child"), leaves)
    split = _present(arrays, "split_feature")
    if np.any((split < 0) | (split >= features)):
        raise ModelStructureError(f"a split on feature {int(split[(split < 0) | (split >= features)][0])}; "
                                  f"the model has {features} features")
    decision = arrays["decision_type"]
    if decision is None:
        decision = np.zeros(leaves - 1, np.int64)
    if np.any((decision < -128) | (decision > 127)):
        raise ModelStructureError("a decision_type outside -128..127")
    categorical = (decision & _CATEGORICAL) != 0
    _check_categories(fields, _present(arrays, "threshold")[categorical], num_cat)


def _present(arrays: dict[str, np.ndarray | None], name: str) -> np.ndarray:
    """One of the fields _REQUIRED has made sure of."""
    array = arrays[name]
    assert array is not None
    return array


def _check_children(left: np.ndarray, right: np.ndarray, leaves: int) -> None:
    children = np.concatenate([left, right])
    internal = children[children >= 0]
    leaf = ~children[children < 0]
    if np.any(internal == 0) or np.any(internal >= leaves - 1) or np.any(leaf >= leaves):
        raise ModelStructureError(f"a child index outside the tree's {leaves - 1} nodes and {leaves} leaves")
    if len(np.unique(internal)) != len(internal) or len(np.unique(leaf)) != len(leaf):
        raise ModelStructureError("a node or leaf is the child of two nodes")


def _check_categories(fields: dict[str, bytes], thresholds: np.ndarray, num_cat: int) -> None:
    """LightGBM reads ``num_cat`` bitsets, cut out of cat_threshold by cat_boundaries; a categorical split's
    threshold is the index of its bitset."""
    if num_cat > 0:
        if "cat_boundaries" not in fields or "cat_threshold" not in fields:
            raise ModelStructureError(f"num_cat is {num_cat}, and no cat_boundaries or cat_threshold")
        bounds = _numbers(fields, "cat_boundaries", num_cat + 1, int)
        assert bounds is not None
        if bounds[0] != 0 or np.any(np.diff(bounds) < 0):
            raise ModelStructureError("cat_boundaries do not rise from 0")
        _numbers(fields, "cat_threshold", int(bounds[-1]), int)
    if np.any(thresholds != np.floor(thresholds)) or np.any((thresholds < 0) | (thresholds >= num_cat)):
        raise ModelStructureError(f"a categorical split names a category set outside the tree's {num_cat}")


def _check_linear(fields: dict[str, bytes], counts: np.ndarray | None, leaves: int, features: int) -> None:
    if counts is None:
        return  # LightGBM gives each leaf a constant only
    if np.any(counts < 0):
        raise ModelStructureError("a negative num_features")
    total = int(counts.sum())
    used = _numbers(fields, "leaf_features", total, int)
    _numbers(fields, "leaf_coeff", total, float)
    if used is not None and np.any((used < 0) | (used >= features)):
        raise ModelStructureError(f"a linear leaf uses a feature outside the model's {features}")


def _scalar(fields: dict[str, bytes], name: str, default: int | None = None) -> int:
    raw = fields.get(name)
    if raw is None:
        if default is None:
            raise ModelStructureError(f"no {name}")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ModelStructureError(f"{name} is {raw[:40]!r}, not an integer") from None
    if not -(2**31) <= value < 2**31:
        raise ModelStructureError(f"{name} {value} is out of range")
    return value


def _numbers(fields: dict[str, bytes], name: str, count: int, kind: type) -> np.ndarray | None:
    """The field's values (None when absent), exactly ``count`` numbers of ``kind``; int32 for ints."""
    raw = fields.get(name)
    if raw is None:
        return None
    parts = raw.split()
    if len(parts) != count:
        raise ModelStructureError(f"{name} has {len(parts)} values; num_leaves asks for {count}")
    try:
        values = np.array(parts, dtype=bytes).astype(np.float64 if kind is float else np.int64)
    except (ValueError, OverflowError):
        raise ModelStructureError(f"{name} holds something other than {kind.__name__}s") from None
    if kind is int and np.any((values < -(2**31)) | (values >= 2**31)):
        raise ModelStructureError(f"{name} holds a number out of range")
    return values
