"""Checks of an XGBoost model's structure, made before XGBoost's native code sees the file.

A model file is untrusted input, and XGBoost trusts the indices in it: one ``left_children`` entry out of
range, a node given two parents, or a split on a feature the booster does not have, and its predictor reads
past its arrays and kills the server (a segfault on the first request that walks down that branch). XGBoost
checks the lengths of the arrays when it loads a model, not what they hold. So every tree is checked here:

- children are ``-1`` (a leaf) or another node of the tree, the root is nobody's child, and no node has two
  parents (then a walk from the root always ends, at a leaf); ``parents`` agree with the children;
- an internal node splits on a feature the booster has; a categorical split's categories lie inside the
  tree's category list;
- a multi-target tree's leaves point into its leaf weights;
- ``tree_info`` names an output group the booster has, and ``iteration_indptr`` runs over the trees in order.

Both formats are read in Python first (``json`` for ``.json``, :mod:`inferd.runtimes.ubjson` for ``.ubj``), so a
file that is not even well formed never reaches XGBoost's own readers, which crash on some such files.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from inferd.runtimes import ubjson


class ModelStructureError(ValueError):
    """The model's content cannot be safe to run; the message says where and what."""


def parse(data: bytes, binary: bool) -> dict[str, Any]:
    """The model document of a ``.ubj`` (``binary``) or ``.json`` file."""
    try:
        document = ubjson.loads(data) if binary else json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ModelStructureError(f"not well-formed {'UBJSON' if binary else 'JSON'}: {exc}") from None
    if not isinstance(document, dict):
        raise ModelStructureError("the top level is not an object")
    return document


def check(document: dict[str, Any]) -> None:
    """Raise :class:`ModelStructureError` when the model could make XGBoost read out of bounds."""
    learner = _object(document, "learner")
    params = _object(learner, "learner_model_param")
    num_feature = _int(params.get("num_feature", 0), "learner_model_param.num_feature")
    groups = max(_int(params.get("num_class", 0), "num_class"), _int(params.get("num_target", 1), "num_target"), 1)
    booster = _object(learner, "gradient_booster")
    name = booster.get("name")
    if name == "gblinear":
        _check_linear(_object(booster, "model"), num_feature, groups)
        return
    if name == "dart":
        booster = _object(booster, "gbtree")
    elif name != "gbtree":
        raise ModelStructureError(f"unknown gradient_booster {name!r}")
    model = _object(booster, "model")
    trees = model.get("trees")
    if not isinstance(trees, list):
        raise ModelStructureError("gradient_booster.model.trees is not a list")
    _check_tree_info(model, len(trees), groups)
    for index, tree in enumerate(trees):
        if not isinstance(tree, dict):
            raise ModelStructureError(f"tree {index} is not an object")
        try:
            _check_tree(tree, num_feature)
        except ModelStructureError as exc:
            raise ModelStructureError(f"tree {index}: {exc}") from None


def _check_linear(model: dict[str, Any], num_feature: int, groups: int) -> None:
    weights = _ints_or_floats(model.get("weights"), "gblinear weights", np.float64)
    if len(weights) != (num_feature + 1) * groups:
        raise ModelStructureError(f"gblinear has {len(weights)} weights; {num_feature} features and {groups} "
                                  f"output groups need {(num_feature + 1) * groups}")


def _check_tree_info(model: dict[str, Any], count: int, groups: int) -> None:
    info = _ints_or_floats(model.get("tree_info", []), "tree_info", np.int64)
    if len(info) != count:
        raise ModelStructureError(f"tree_info has {len(info)} entries for {count} trees")
    if len(info) and (info.min() < 0 or info.max() >= groups):
        raise ModelStructureError(f"tree_info names output group {int(info.max())}; the booster has {groups}")
    if "iteration_indptr" in model:
        indptr = _ints_or_floats(model["iteration_indptr"], "iteration_indptr", np.int64)
        if len(indptr) and (indptr[0] != 0 or indptr[-1] != count or np.any(np.diff(indptr) < 0)):
            raise ModelStructureError(f"iteration_indptr does not run from 0 to {count} trees in order")


def _check_tree(tree: dict[str, Any], num_feature: int) -> None:
    param = tree.get("tree_param")
    if not isinstance(param, dict):
        raise ModelStructureError("no tree_param")
    nodes = _int(param.get("num_nodes"), "num_nodes")
    leaf_vector = _int(param.get("size_leaf_vector", 1), "size_leaf_vector") or 1
    left = _ints_or_floats(tree.get("left_children"), "left_children", np.int64)
    right = _ints_or_floats(tree.get("right_children"), "right_children", np.int64)
    splits = _ints_or_floats(tree.get("split_indices"), "split_indices", np.int64)
    if nodes < 1 or not len(left) == len(right) == len(splits) == nodes:
        raise ModelStructureError(f"num_nodes is {nodes} but it has {len(left)} left_children, {len(right)} "
                                  f"right_children and {len(splits)} split_indices")
    leaf = left == -1
    _raise(_leaves_problem(tree, leaf, right, leaf_vector))
    children = np.concatenate([left[~leaf], right[~leaf]])
    if np.any((children < 1) | (children >= nodes)):
        wrong = int(children[(children < 1) | (children >= nodes)][0])
        raise ModelStructureError(f"a child index {wrong} is outside the tree's nodes 1..{nodes - 1}")
    if len(np.unique(children)) != len(children):
        raise ModelStructureError("a node is the child of two nodes")
    _raise(_parents_problem(tree, np.flatnonzero(~leaf), left, right, nodes))
    internal_splits = splits[~leaf]
    if np.any((internal_splits < 0) | (internal_splits >= num_feature)):
        raise ModelStructureError(f"a node splits on feature {int(internal_splits.max())}; the booster has "
                                  f"{num_feature} features")
    _raise(_categories_problem(tree, nodes))


def _raise(problem: str | None) -> None:
    if problem:
        raise ModelStructureError(problem)


def _parents_problem(tree: dict[str, Any], internal: np.ndarray, left: np.ndarray, right: np.ndarray,
                     nodes: int) -> str | None:
    """XGBoost follows ``parents`` too (a node's depth, for one): each must be the node that has it as a child,
    the root's -1 or 2**31 - 1, and any other (a pruned node's) a node of the tree."""
    parents = _ints_or_floats(tree.get("parents"), "parents", np.int64)
    if len(parents) != nodes:
        return f"num_nodes is {nodes} but it has {len(parents)} parents"
    if parents[0] not in (-1, 2**31 - 1):
        return f"the root has parent {int(parents[0])}"
    if np.any((parents[1:] < 0) | (parents[1:] >= nodes)):
        return "a parent index is outside the tree's nodes"
    wrong = (parents[left[internal]] != internal) | (parents[right[internal]] != internal)
    if wrong.any():
        return f"a child of node {int(internal[wrong][0])} names another parent"
    return None


def _leaves_problem(tree: dict[str, Any], leaf: np.ndarray, right: np.ndarray, leaf_vector: int) -> str | None:
    """A leaf has no children, except that a multi-target leaf's right child is its row of leaf_weights."""
    if leaf_vector > 1:
        rows = len(_ints_or_floats(tree.get("leaf_weights", []), "leaf_weights", np.float64)) // leaf_vector
        bad = leaf & ((right < 0) | (right >= rows))
        if bad.any():
            return f"leaf {int(np.argmax(bad))} points at leaf weights row {int(right[bad][0])} of {rows}"
    elif np.any(leaf != (right == -1)):
        return f"node {int(np.argmax(leaf != (right == -1)))} has one child"
    return None


def _categories_problem(tree: dict[str, Any], nodes: int) -> str | None:
    types = _ints_or_floats(tree.get("split_type", []), "split_type", np.int64)
    if len(types) not in (0, nodes) or np.any((types != 0) & (types != 1)):
        return "split_type must be 0 or 1 for each node"
    listed = _ints_or_floats(tree.get("categories_nodes", []), "categories_nodes", np.int64)
    segments = _ints_or_floats(tree.get("categories_segments", []), "categories_segments", np.int64)
    sizes = _ints_or_floats(tree.get("categories_sizes", []), "categories_sizes", np.int64)
    total = len(_ints_or_floats(tree.get("categories", []), "categories", np.int64))
    if not len(listed) == len(segments) == len(sizes):
        return "categories_nodes, categories_segments and categories_sizes differ in length"
    if np.any((listed < 0) | (listed >= nodes)) or np.any(segments < 0) or np.any(sizes < 0) \
            or np.any(segments + sizes > total):
        return f"a categorical split's categories lie outside the tree's {total} categories"
    categorical = np.flatnonzero(types == 1)
    if len(categorical) and not np.isin(categorical, listed).all():
        return "a categorical split has no categories"
    return None


def _object(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise ModelStructureError(f"no {key!r} object")
    return value


def _int(value: Any, what: str) -> int:
    """XGBoost writes its parameters as strings of digits."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ModelStructureError(f"{what} is {value!r}, not an integer") from None


def _ints_or_floats(value: Any, what: str, dtype: type[np.generic]) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value.astype(dtype, copy=False)
    if not isinstance(value, list):
        raise ModelStructureError(f"{what} is missing or not an array")
    try:
        array = np.asarray(value, dtype=np.float64 if dtype is np.int64 else dtype)
    except (TypeError, ValueError):
        raise ModelStructureError(f"{what} holds something other than numbers") from None
    if array.ndim != 1:
        raise ModelStructureError(f"{what} is not a flat array of numbers")
    if dtype is np.int64:
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)) or np.any(np.abs(array) > 2**62):
            raise ModelStructureError(f"{what} holds numbers that are not integers")
        return array.astype(np.int64)
    return array
