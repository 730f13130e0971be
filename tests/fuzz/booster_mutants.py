"""Run as a script: load many randomly damaged XGBoost and LightGBM models through inferd's runtimes and predict
with those that load. A crash or a hang kills this process, so the test runs it as a child and reads the last
mutation it printed. Usage: ``booster_mutants.py xgboost|lightgbm FOLDER COUNT SEED``."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from inferd.runtimes.registry import RUNTIMES, load_runtime

X = np.random.default_rng(0).uniform(-3, 3, size=(300, 4)).astype(np.float32)
XGB_ARRAYS = ("left_children", "right_children", "split_indices", "split_type", "parents", "categories_nodes",
              "categories_segments", "categories_sizes")
LGB_FIELDS = ("num_leaves", "num_cat", "split_feature", "left_child", "right_child", "decision_type", "leaf_count",
              "internal_count", "cat_boundaries", "cat_threshold", "is_linear")


def xgboost_mutant(base: dict[str, Any], rng: np.random.Generator) -> tuple[bytes, str]:
    document = json.loads(json.dumps(base))
    model = document["learner"]["gradient_booster"]["model"]
    changes = []
    for _ in range(int(rng.integers(1, 4))):
        index = int(rng.integers(len(model["trees"])))
        tree = model["trees"][index]
        key = XGB_ARRAYS[int(rng.integers(len(XGB_ARRAYS)))]
        values = tree[key]
        nodes = int(tree["tree_param"]["num_nodes"])
        value = int(rng.integers(-3, nodes + 4))
        if values and rng.random() < 0.8:
            position = int(rng.integers(len(values)))
            values[position] = value
            changes.append(f"tree {index} {key}[{position}] = {value}")
        else:
            values.append(value)
            changes.append(f"tree {index} {key} += [{value}]")
    if rng.random() < 0.1:
        model["tree_info"][0] = int(rng.integers(-1, 3))
        changes.append(f"tree_info[0] = {model['tree_info'][0]}")
    return json.dumps(document).encode(), "; ".join(changes)


def lightgbm_mutant(base: str, rng: np.random.Generator) -> tuple[bytes, str]:
    lines = base.split("\n")
    candidates = [i for i, line in enumerate(lines) if line.partition("=")[0] in LGB_FIELDS]
    changes = []
    for _ in range(int(rng.integers(1, 4))):
        i = candidates[int(rng.integers(len(candidates)))]
        key, _, raw = lines[i].partition("=")
        values = raw.split()
        value = str(int(rng.integers(-20, 20)))
        if values and rng.random() < 0.8:
            values[int(rng.integers(len(values)))] = value
        else:
            values.append(value)
        lines[i] = f"{key}={' '.join(values)}"
        changes.append(f"line {i + 1}: {lines[i][:60]}")
    text = "\n".join(lines)
    # tree_sizes follow the new lengths, so that the damage reaches the trees rather than the layout check
    blocks = re.split(r"(?m)^(?=Tree=|end of trees)", text)
    sizes = " ".join(str(len(b.encode())) for b in blocks if b.startswith("Tree="))
    text = re.sub(r"(?m)^tree_sizes=.*$", f"tree_sizes={sizes}", text, count=1)
    return text.encode(), "; ".join(changes)


def main(runtime: str, folder: Path, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    source = folder / ("model.json" if runtime == "xgboost" else "model.txt")
    base: Any = json.loads(source.read_text()) if runtime == "xgboost" else source.read_text()
    refused = 0
    for number in range(count):
        data, what = xgboost_mutant(base, rng) if runtime == "xgboost" else lightgbm_mutant(base, rng)
        target = folder / "mutant" / source.name
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(data)
        print(f"mutant {number}: {what}", flush=True)
        try:
            loaded = load_runtime(RUNTIMES[runtime], target, target.parent, {}, None)
        except ValueError:
            refused += 1
            continue
        loaded.predict({"input": X})
        loaded.close()
    print(f"done: {refused} of {count} refused", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
